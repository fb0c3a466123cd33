"""`jobs compare`: rank fits by PSIS-LOO (or WAIC) from their stored pointwise log-likelihood."""

from __future__ import annotations

import click

from kiln.cli.app import App, jobs
from kiln.cli.complete import job_ids


@jobs.command()
@click.argument("ids", nargs=-1, required=True, shell_complete=job_ids)
@click.option("--ic", type=click.Choice(["loo", "waic"]), default="loo", show_default=True,
              help="Information criterion: PSIS-LOO or WAIC.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON entry per job, best first.")
@click.pass_obj
def compare(app: App, ids: tuple[str, ...], ic: str, as_json: bool) -> None:
    """Rank fits by expected log predictive density (PSIS-LOO or WAIC), as arviz.compare does.

    Per job, best first: rank, elpd, se, p (effective parameters), d and dse (the difference to
    the best and its standard error), stacking weight, warning, and pareto_k_bad (data points
    whose Pareto k is over 0.7: their LOO estimate is unreliable). The fits must be of the
    same observations; each needs a stored pointwise log-likelihood (fits of user models and
    of the built-in regression have one).
    """
    from kiln.compare import to_json
    from kiln.render import emit_rows

    table = app.client.compare(list(ids), ic)
    entries = to_json(table)
    if as_json:
        app.emit(entries, as_json=True)
        return
    columns = ["id", *table.columns]
    rows = [[_cell(e[c]) for c in columns] for e in entries]
    emit_rows(columns, rows, "table", title=f"{ic.upper()} comparison ({len(rows)} jobs)")
    flagged = [e["id"] for e in entries if e.get("pareto_k_bad")]
    if flagged:
        app.say(
            f"Pareto k > 0.7 for some data points of {', '.join(flagged)}: their LOO is"
            " unreliable there; try more draws, or a model less thrown by those points"
        )


def _cell(value: object) -> object:
    return f"{value:.2f}" if isinstance(value, float) else value
