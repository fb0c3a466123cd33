"""`jobs submit fit`: validate, store and queue a fit; optionally wait for it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from kiln.catalog import ELBOS, GUIDES, LIBRARY_MODELS, MODELS, OPTIMS, QUEUES
from kiln.cli.app import App, jobs
from kiln.cli.complete import job_ids
from kiln.cli.mcmcopts import OPTIONS as UNIT_OPTIONS
from kiln.cli.mcmcopts import mcmc_unit_options
from kiln.cli.submitted import report_submitted
from kiln.errors import SpecError
from kiln.labels import labels_of

if TYPE_CHECKING:
    from kiln.submitter import Request

WAIT = click.option("--wait", is_flag=True, help="Wait for the job to end; exit 1 if it failed.")
TIMEOUT = click.option(
    "--timeout", type=float, default=None, help="With --wait: give up after SECONDS."
)
AS_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
NAME = click.option(
    "--name", default=None, metavar="NAME",
    help="Name it (unique among yours); usable wherever its id is.",
)  # fmt: skip
TAGS = click.option(
    "--tag", "tags", multiple=True, metavar="KEY=VALUE",
    help="Tag it (repeatable; a sweep tags every member); find it with"
    " `kiln list --where \"tag.KEY = 'VALUE'\"`.",
)  # fmt: skip
MAX_SET_TEXT = 320  # characters of one --set KEY=VALUE (a key of 64, a value of 255)


@jobs.group()
def submit() -> None:
    """Submit a job."""


@submit.command()
@click.option(
    "--model", default=None, metavar="NAME|FILE.py[:FUNCTION]",
    help=f"A built-in model ({', '.join((*MODELS, *LIBRARY_MODELS))}) or your own: a Python"
    " file and the function in it taking the data as keyword arguments [default: model].",
)  # fmt: skip
@click.option(
    "--data", "data_path", default=None,
    help="CSV file (built-in models; for your own, its columns become arrays), a JSON object"
    " of names to numbers and lists, `digits` (scikit-learn's 8x8 digits) or an MNIST folder.",
)  # fmt: skip
@click.option(
    "--formula", default=None,
    help='Built-in models: e.g. "log(rgdppc_2000) ~ cont_africa * rugged".',
)  # fmt: skip
@click.option(
    "--guide", default="AutoNormal", show_default=True, metavar="AUTOGUIDE|FILE.py:FUNCTION",
    help=f"SVI guide: {', '.join(GUIDES)}; or a guide function in your model's file.",
)  # fmt: skip
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="A library model's option (e.g. hidden=64, epochs=20); repeatable.",
)
@click.option(
    "--method", type=click.Choice(["svi", "nuts", "hmc"]), default="svi", show_default=True,
    help="nuts/hmc: MCMC (your own models).",
)  # fmt: skip
@click.option("--steps", type=int, default=1000, show_default=True,
              help="SVI steps (with --continue: how many more).")  # fmt: skip
@click.option(
    "--continue", "continue_from", default=None, metavar="FIT_ID",
    help="Go on from a succeeded, cancelled or failed SVI fit's stored state with --steps"
    " more steps (its model, data and settings; --lr, --seed, --device, --queue, --priority"
    " may change).",
)  # fmt: skip
@click.option(
    "--lr", type=float, default=None, help="SVI learning rate [default: 0.02 built-in, 0.01 own]."
)
@click.option("--warmup", type=int, default=None, help="MCMC warmup per chain [default: 1000].")
@click.option(
    "--samples", type=int, default=None, help="MCMC draws kept per chain [default: 1000]."
)
@click.option("--chains", type=int, default=None, help="MCMC chains, run in parallel [default: 4].")
@click.option(
    "--target-accept", type=float, default=None, help="NUTS/HMC step size target [default: 0.8]."
)
@click.option("--max-tree-depth", type=int, default=None, help="NUTS [default: 10].")
@click.option("--num-steps", type=int, default=None, help="HMC leapfrog steps per draw.")
@click.option(
    "--jit", type=click.Choice(["auto", "off", "inductor"]), default=None,
    help="MCMC: auto compiles the model's potential (falls back where tracing fails) and,"
    " when the first 50 iterations' trees foretell a long run, compiles the sampler's step"
    " to C++ with inductor; inductor does that from the start (a compiler on the worker)"
    " [default: auto].",
)  # fmt: skip
@click.option("--keep-warmup", is_flag=True, default=None,
              help="MCMC: store the warmup draws too (jobs export --warmup).")  # fmt: skip
@mcmc_unit_options
@click.option("--seed", type=int, default=None, help="RNG seed (default: random, recorded).")
@click.option(
    "--elbo", type=click.Choice(ELBOS), default="auto", show_default=True,
    help="auto: JitTrace_ELBO for built-in models.",
)  # fmt: skip
@click.option("--optim", type=click.Choice(OPTIMS), default="Adam", show_default=True)
@click.option(
    "--num-samples", type=int, default=1000, show_default=True,
    help="Posterior draws kept for the parameter summaries.",
)  # fmt: skip
@click.option(
    "--prior", "priors", multiple=True,
    help="Override a prior: TERM=normal(LOC,SCALE) or sigma=uniform(LOW,HIGH). Repeatable.",
)  # fmt: skip
@click.option(
    "--init", type=click.Choice(["auto", "median"]), default="auto", show_default=True,
    help="Guide start: auto = least squares; median = Pyro's default (the prior's median).",
)  # fmt: skip
@click.option(
    "--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True
)
@click.option("--queue", type=click.Choice(QUEUES), default=None, help="Default: by device.")
@click.option("--priority", type=int, default=5, show_default=True, help="0-9, higher runs sooner.")
@click.option(
    "--checkpoint-every", type=int, default=None, metavar="STEPS",
    help="Save resumable state every STEPS steps [default: KILN_CHECKPOINT_EVERY, 1000].",
)  # fmt: skip
@click.option(
    "--checkpoint-every-s", type=float, default=None, metavar="SECONDS",
    help="...and every SECONDS seconds [default: KILN_CHECKPOINT_EVERY_S, 30]; 0: never.",
)  # fmt: skip
@click.option(
    "--then-predict", "then_predict", type=int, default=None, metavar="SAMPLES",
    help="Also submit a predict job of SAMPLES draws that runs when the fit succeeds.",
)  # fmt: skip
@NAME
@TAGS
@WAIT
@TIMEOUT
@AS_JSON
@click.pass_obj
def fit(app: App, /, data_path: str, priors: tuple[str, ...], wait: bool, timeout: float | None,
        as_json: bool, then_predict: int | None, settings: tuple[str, ...], name: str | None,
        tags: tuple[str, ...], **options: Any) -> None:  # fmt: skip
    """Fit a model: a built-in one by SVI (linreg on a CSV file and a formula; the library's
    models on their data, options by --set: see `jobs models`), or your own Pyro model file
    by SVI (autoguide or your guide) or by MCMC (NUTS/HMC, chains in parallel).

    \b
    jobs submit fit --model linreg --data rugged.csv --formula "y ~ x"
    jobs submit fit --model eight_schools.py:model --data schools.json --method nuts
    jobs submit fit --model eight_schools.py --data schools.json --guide AutoMultivariateNormal
    jobs submit fit --model bnn-classifier --data digits --set hidden=64 --then-predict 100
    jobs submit fit --continue 3f2a9c1d --steps 500 --lr 0.005
    """
    mcmc_options = ("warmup", "samples", "chains", "target_accept", "max_tree_depth", "num_steps",
                    "jit", "keep_warmup", *UNIT_OPTIONS)  # fmt: skip
    continue_from = options.pop("continue_from")
    if continue_from is not None:
        request = _continue_request(app, continue_from, options["steps"])
    elif options["model"] is None or data_path is None:
        missing = "--model" if options["model"] is None else "--data"
        raise SpecError(f"{missing} is required (or --continue FIT_ID --steps N)", "model")
    elif options["model"] in LIBRARY_MODELS:
        request = _library_request(app, data_path, settings, priors, options, mcmc_options)
    elif settings:
        raise SpecError(f"--set is for library models ({', '.join(LIBRARY_MODELS)})", "options")
    elif options["model"] not in MODELS:
        request = _model_request(app, data_path, priors, options, mcmc_options)
    else:
        request = _linreg_request(app, data_path, priors, options, mcmc_options)
    labels = labels_of(name, tags)
    report_submitted(
        app, app.client.submit(request, then_predict, labels=labels), wait, timeout, as_json
    )


def _continue_request(app: App, parent: str, steps: int) -> Request:
    """A continuation: only the options it takes may be given (by flag or environment)."""
    from click.core import ParameterSource

    from kiln.continuation import CONTINUE_FIELDS

    ctx = click.get_current_context()
    takes = {*CONTINUE_FIELDS, "continue_from", "then_predict", "name", "tags", "wait",
             "timeout", "as_json"}  # fmt: skip
    given: dict[str, Any] = {}
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name or "")
        if not param.name or source in (None, ParameterSource.DEFAULT):
            continue
        if param.name not in takes:
            raise SpecError(
                f"{param.opts[0]}: a continued fit keeps its parent's model, data and settings;"
                " give only --steps (how many more), --lr, --seed, --device, --queue or"
                " --priority",
                field=param.name,
            )
        if param.name in CONTINUE_FIELDS:
            given[param.name] = ctx.params[param.name]
    if "steps" not in given:
        raise SpecError(f"--continue {parent}: give --steps N, how many more steps", "steps")
    del given["steps"]
    return app.client.continue_request(parent, steps, **given)


def _given(options: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: options[k] for k in keys if options.get(k) is not None}


COMMON = ("seed", "device", "queue", "priority", "checkpoint_every", "checkpoint_every_s")


def _linreg_request(
    app: App, data_path: str, priors: tuple[str, ...], options: dict[str, Any],
    mcmc_options: tuple[str, ...],
) -> Request:  # fmt: skip
    given = [f"--{o.replace('_', '-')}" for o in mcmc_options if options[o] is not None]
    if options["method"] != "svi" or given:
        raise SpecError(
            f"{given[0] if given else '--method ' + options['method']}: MCMC runs your own"
            " model files (--model FILE.py); built-in models are fitted by SVI",
            field="method",
        )
    if options["formula"] is None:
        raise SpecError(f"--formula is required for the built-in model {options['model']}")
    if options["guide"] not in GUIDES:
        from kiln.specerrors import did_you_mean

        raise SpecError(f"--guide {options['guide'][:100]!r}: built-in models take"
                        f" {', '.join(GUIDES)}{did_you_mean(options['guide'], GUIDES)}",
                        field="guide")  # fmt: skip
    fields = _given(options, ("guide", "elbo", "optim", "steps", "lr", "num_samples", "init",
                              *COMMON))  # fmt: skip
    return app.client.fit_request(
        data_path, options["formula"], options["model"], priors=list(priors), **fields
    )


def _library_request(
    app: App, data_path: str, settings: tuple[str, ...], priors: tuple[str, ...],
    options: dict[str, Any], mcmc_options: tuple[str, ...],
) -> Request:  # fmt: skip
    name = options["model"]
    unused = {"--formula": options["formula"], "--prior": priors or None,
              "--method": None if options["method"] == "svi" else options["method"],
              "--guide": None if options["guide"] == "AutoNormal" else options["guide"],
              "--steps": None if options["steps"] == 1000 else options["steps"],
              "--init": None if options["init"] == "auto" else options["init"],
              "--elbo": None if options["elbo"] == "auto" else options["elbo"],
              **{f"--{o.replace('_', '-')}": options[o] for o in mcmc_options}}  # fmt: skip
    for flag, value in unused.items():
        if value is not None:
            raise SpecError(
                f"{flag} does not apply to the library model {name}: it sets its own; change"
                f" its options with --set (see `jobs models`)",
                field="model",
            )
    for text in settings:  # a KEY=VALUE is short: it is echoed in messages and stored
        if len(text) > MAX_SET_TEXT:
            raise SpecError(
                f"--set {text[:40]!r}...: {len(text)} characters; at most {MAX_SET_TEXT}",
                field="options",
            )
    given = list(settings)
    if options["lr"] is not None:
        given.append(f"lr={options['lr']}")
    fields = _given(options, ("optim", *COMMON))
    if options.get("num_samples") not in (None, 1000):  # the SVI default; library: 200
        fields["num_samples"] = options["num_samples"]
    return app.client.library_request(name, data_path, given, **fields)


def _model_request(
    app: App, data_path: str, priors: tuple[str, ...], options: dict[str, Any],
    mcmc_options: tuple[str, ...],
) -> Request:  # fmt: skip
    from pathlib import Path

    from scheduler.usermodel import parse_model_option

    if ":" not in options["model"] and not options["model"].endswith(".py"):
        import difflib

        known = [*MODELS, *LIBRARY_MODELS]
        close = difflib.get_close_matches(options["model"], known, n=1, cutoff=0.6)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        raise SpecError(
            f"--model {options['model']!r}: not a built-in model ({', '.join(known)}) nor a"
            f" FILE.py[:FUNCTION]{hint}",
            field="model",
        )
    path, function = parse_model_option(options["model"])
    for flag, value in (
        ("--formula", options["formula"]),
        ("--prior", priors or None),
        ("--init", None if options["init"] == "auto" else options["init"]),
    ):
        if value is not None:
            raise SpecError(f"{flag} is for built-in models; {path} is your own model", "model")
    guide, guide_function = options["guide"], None
    if guide not in GUIDES:
        guide_path, guide_function = parse_model_option(guide)
        if ":" not in guide:
            from kiln.specerrors import did_you_mean

            raise SpecError(f"--guide {guide[:100]!r}: an autoguide name ({', '.join(GUIDES)})"
                            f" or FILE.py:FUNCTION{did_you_mean(guide, GUIDES)}",
                            "guide")  # fmt: skip
        if Path(guide_path).resolve() != Path(path).resolve():
            raise SpecError(
                f"--guide {guide!r}: the guide function must be in the model's file ({path})",
                field="guide",
            )
        guide = "AutoNormal"
    if options["method"] == "svi":
        given = [o for o in mcmc_options if options[o] is not None]
        if given:
            raise SpecError(f"--{given[0].replace('_', '-')} is for --method nuts or hmc")
        fields = _given(options, ("elbo", "optim", "steps", "lr", "num_samples", *COMMON))
        fields.update(guide=guide, guide_function=guide_function)
    else:
        if guide_function is not None:
            raise SpecError(f"--guide is for SVI; method {options['method']} needs no guide",
                            "guide")  # fmt: skip
        fields = _given(options, (*mcmc_options, "seed", "device", "queue", "priority"))
    return app.client.model_request(path, data_path, function, options["method"], **fields)


@submit.command()
@click.option(
    "--from", "from_job", required=True, metavar="FIT_ID", help="The fit to predict from.",
    shell_complete=job_ids,
)  # fmt: skip
@click.option(
    "--data", "data_path", default=None,
    help="New data: a CSV of rows (built-in models), or a JSON/CSV file of the names your"
    " model takes (its observed ones may be left out). Default: the fit's own data.",
)  # fmt: skip
@click.option(
    "--samples", "num_samples", type=int, default=800, show_default=True,
    help="Posterior predictive draws (capped by KILN_MAX_PREDICT_SAMPLES).",
)  # fmt: skip
@click.option("--seed", type=int, default=None, help="RNG seed (default: random, recorded).")
@click.option(
    "--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True
)
@click.option("--queue", type=click.Choice(QUEUES), default=None, help="Default: by device.")
@click.option("--priority", type=int, default=5, show_default=True, help="0-9, higher runs sooner.")
@NAME
@TAGS
@WAIT
@TIMEOUT
@AS_JSON
@click.pass_obj
def predict(app: App, /, data_path: str | None, wait: bool, timeout: float | None,
            as_json: bool, name: str | None, tags: tuple[str, ...],
            **options: Any) -> None:  # fmt: skip
    """Draw from the posterior predictive of a fit, for its own rows or new ones.

    A fit that is still queued or running is waited for: the predict job starts when the fit
    has succeeded, and fails with the reason if the fit did not.
    """
    from_job, num_samples = options.pop("from_job"), options.pop("num_samples")
    request = app.client.predict_request(from_job, num_samples, data_path, **options)
    labels = labels_of(name, tags)
    report_submitted(app, app.client.submit(request, labels=labels), wait, timeout, as_json)
