"""The dashboard in a real browser (Debian's chromium through Playwright): sign in with a token,
watch a running fit's progress and loss curve grow and cancel it with the button, read a
finished fit's posterior and predictive figure, be refused another user's job, expand a sweep,
see the fleet, sign out. axe-core checks each page (no serious or critical violation), every
page loads without a script error or a Content-Security-Policy refusal, and each is
screenshotted (the folder is printed at the end of the run). An MCMC fit's page (traces,
R-hat) is `slow`: its fit runs in a sandboxed process of its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import run_in_process
from tests.web.conftest import AXE, Site, keep, mcmc_fit, submit

pytestmark = pytest.mark.timeout(240)
SERIOUS = ("serious", "critical")
VIEWPORT = {"width": 1440, "height": 900}  # a laptop screen


@dataclass
class Tab:
    """A signed-in browser page, and what its console said went wrong."""

    page: Any
    site: Site
    errors: list[str] = field(default_factory=list)

    def go(self, path: str) -> Any:
        return self.page.goto(self.site.api.url + path)

    def shot(self, name: str) -> Any:
        path = self.site.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def axe(self) -> list[dict[str, Any]]:
        """axe-core's violations on the page as it is now, serious and critical ones."""
        if not self.page.evaluate("() => typeof window.axe !== 'undefined'"):
            self.page.evaluate(AXE.read_text(encoding="utf-8"))  # over CDP: no CSP applies
        found: list[dict[str, Any]] = self.page.evaluate(
            """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
                 .map(v => ({id: v.id, impact: v.impact, help: v.help,
                             nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}))"""
        )
        return [v for v in found if v["impact"] in SERIOUS]


def open_tab(browser: Any, site: Site, who: str | None) -> Tab:
    context = browser.new_context(viewport=VIEWPORT)
    tab = Tab(context.new_page(), site)
    tab.page.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    tab.page.on("pageerror", lambda e: tab.errors.append(str(e)))
    if who is not None:
        tab.go("/")
        tab.page.fill("#token", site.api.tokens[who])
        tab.page.click("form.stack button[type=submit]")
        tab.page.wait_for_url(site.api.url + "/")
    return tab


@pytest.fixture
def alice(browser: Any, site: Site) -> Iterator[Tab]:
    tab = open_tab(browser, site, "alice")
    yield tab
    tab.page.context.close()


def test_sign_in_with_a_token_and_the_jobs_page(browser: Any, site: Site) -> None:
    tab = open_tab(browser, site, None)
    tab.go(f"/ui/jobs/{site.jobs['fit']}")
    assert "/login?next=" in tab.page.url  # no cookie: to the login page
    tab.shot("login")
    assert tab.axe() == []
    tab.page.fill("#token", "kiln_000000000000_wrong")
    tab.page.click("form.stack button[type=submit]")
    assert "the token is not valid" in tab.page.inner_text("p.error")
    tab.page.fill("#token", site.api.tokens["alice"])
    tab.page.click("form.stack button[type=submit]")
    tab.page.wait_for_url(f"{site.api.url}/ui/jobs/{site.jobs['fit']}")  # back where it was
    cookies = {c["name"]: c for c in tab.page.context.cookies()}
    assert cookies["kiln_token"]["httpOnly"] and cookies["kiln_token"]["sameSite"] == "Strict"
    assert not cookies["kiln_csrf"]["httpOnly"] and cookies["kiln_csrf"]["sameSite"] == "Strict"
    assert tab.page.evaluate("() => document.cookie").count("kiln_token") == 0
    tab.go("/")
    rows = tab.page.locator("#jobs tbody tr[data-job]")
    shown = {rows.nth(i).get_attribute("data-job") for i in range(rows.count())}
    assert {site.jobs["fit"], site.jobs["predict"]} <= shown
    assert site.jobs["bobs"] not in shown  # a submit user sees their own
    fit_row = tab.page.locator(f'#jobs tr[data-job="{site.jobs["fit"]}"]')
    assert "succeeded" in fit_row.inner_text() and "SVI, AutoNormal" in fit_row.inner_text()
    tab.page.select_option("#f-kind", "predict")
    tab.page.click("form.filters button[type=submit]")
    tab.page.wait_for_url("**/?*kind=predict*")
    assert tab.page.locator("#jobs tbody tr[data-job]").count() == 1
    tab.go("/")
    tab.shot("jobs")
    assert tab.axe() == []
    assert [e for e in tab.errors if "status of 401" not in e] == [], tab.errors  # the bad token
    tab.page.context.close()


def test_a_sweep_row_expands_to_its_members_and_the_sweep_page(alice: Tab, site: Site) -> None:
    alice.go("/")
    button = alice.page.locator(f'button.expand[data-sweep="{site.sweep}"]')
    members = alice.page.locator(f"#members-{site.sweep}")
    assert members.is_hidden()
    button.click()
    alice.page.wait_for_selector(f"#members-{site.sweep} tr[data-member]")
    assert members.locator("tr[data-member]").count() == 4  # 2 lr x 2 seeds
    assert button.get_attribute("aria-expanded") == "true"
    alice.shot("jobs-sweep-expanded")
    assert alice.axe() == []
    button.click()
    assert members.is_hidden()
    alice.go(f"/ui/sweeps/{site.sweep}")
    alice.page.wait_for_selector("#site-chart .uplot canvas")
    assert alice.page.locator("#grid-summary tbody tr").count() == 2  # a row per grid point
    alice.page.select_option("#pick-site", "sigma")
    alice.page.wait_for_function(
        "() => document.querySelector('#site-chart .u-title').textContent.startsWith('sigma')"
    )
    alice.shot("sweep")
    assert alice.axe() == []
    assert alice.errors == []


def test_a_finished_fit_shows_its_posterior_and_predictive_figure(alice: Tab, site: Site) -> None:
    alice.go(f"/ui/jobs/{site.jobs['fit']}")
    posterior = alice.page.locator("#posterior tbody th")
    sites = {posterior.nth(i).inner_text() for i in range(posterior.count())}
    assert sites >= {"sigma"} and len(sites) == 5  # a, the three slopes, sigma
    alice.page.wait_for_selector("#predictive .uplot >> nth=1")  # the two panels
    captions = alice.page.locator("#predictive figcaption").all_inner_texts()
    assert [c.split(":")[0] for c in captions] == ["cont_africa = 0", "cont_africa = 1"]
    assert "inside the 90% predictive band" in captions[0]
    alice.page.wait_for_function(
        "() => document.querySelectorAll('#histograms .uplot').length === 5"
    )
    assert int(alice.page.get_attribute("#loss-chart", "data-points") or 0) == 300
    assert alice.page.locator("#attempts tbody tr").count() == 1
    assert alice.page.locator("a[href$='format=netcdf']").count() == 1
    assert alice.page.locator("#cancel-form").count() == 0  # it has ended
    keep(alice.shot("job-finished"), "dashboard-job.png")
    assert alice.axe() == []
    alice.go(f"/ui/jobs/{site.jobs['predict']}")
    alice.page.wait_for_selector("#predictive .uplot >> nth=1")
    assert alice.errors == []


@pytest.mark.slow
def test_an_mcmc_fit_shows_its_diagnostics_and_traces(alice: Tab, site: Site) -> None:
    job_id = site.jobs.get("mcmc") or mcmc_fit(site.api, site)
    alice.go(f"/ui/jobs/{job_id}")
    assert "R-hat" in alice.page.inner_text("#posterior thead")
    alice.page.wait_for_function(
        "() => document.querySelectorAll('#traces .uplot').length === JSON.parse("
        "document.getElementById('traces').dataset.elements).length"
    )
    assert (
        alice.page.locator("#traces .uplot").first.locator(".u-legend").inner_text().count("chain")
        == 2
    )
    alice.shot("job-mcmc")
    assert alice.axe() == []
    assert alice.errors == []


def test_a_running_fit_grows_its_progress_and_loss_curve_until_cancelled(
    alice: Tab, site: Site
) -> None:
    job_id = submit(site.api, "alice", steps=50_000)[0]
    outcome: list[str] = []
    runner = threading.Thread(target=lambda: outcome.append(run_in_process(site.api.stack,
                                                                           job_id)))  # fmt: skip
    runner.start()
    try:
        page = alice.page
        alice.go("/")  # the jobs table follows it (GET /jobs every 3 s)
        bar = f'#jobs tr[data-job="{job_id}"] progress'
        page.wait_for_function(f"() => document.querySelector('{bar}').value > 0", timeout=60_000)
        shown = float(page.evaluate(f"() => document.querySelector('{bar}').value"))
        page.wait_for_function(f"() => document.querySelector('{bar}').value > {shown}",
                               timeout=30_000)  # fmt: skip
        assert page.inner_text(f'#jobs tr[data-job="{job_id}"] .status') == "running"
        alice.go(f"/ui/jobs/{job_id}")

        def seen() -> tuple[float, int]:
            value = float(page.evaluate("() => document.getElementById('job-progress').value"))
            return value, int(page.get_attribute("#loss-chart", "data-points") or 0)

        page.wait_for_function("() => Number(document.getElementById('loss-chart')"
                               ".dataset.points) > 0", timeout=60_000)  # fmt: skip
        first = seen()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(
            n > o for n, o in zip(seen(), first, strict=True)
        ):
            time.sleep(0.3)
        later = seen()
        assert later[0] > first[0] and later[1] > first[1], (first, later)
        assert page.inner_text("#job-status") == "running"
        alice.shot("job-running")
        assert alice.axe() == []
        page.click("#cancel-form button")
        page.wait_for_function(
            # ?. : the page reloads when the job ends, and has no #job-status for a moment
            "() => document.getElementById('job-status')?.textContent === 'cancelled'",
            timeout=30_000)  # fmt: skip
        page.wait_for_selector("#cancel-form", state="detached")  # reloaded once it ended
        assert alice.errors == []
    finally:
        from db.jobs import request_cancel

        with site.api.stack.sessions()() as session:
            request_cancel(session, job_id)
        runner.join(timeout=60)
    assert outcome == ["cancelled"]


def test_another_users_job_is_not_found_and_signing_out(alice: Tab, site: Site) -> None:
    answer = alice.go(f"/ui/jobs/{site.jobs['bobs']}")
    assert answer.status == 404
    assert "not found" in alice.page.inner_text("main")
    alice.shot("not-found")
    # the API with the page's cookie: the same refusal, and no unsafe call without the CSRF header
    got = alice.page.evaluate(
        """async (id) => {
             const csrf = document.cookie.split("; ").find(c => c.startsWith("kiln_csrf="))
                                         .slice("kiln_csrf=".length);
             const cancel = (headers) => fetch(`/jobs/${id}/cancel`, {method: "POST", headers});
             return [(await fetch(`/jobs/${id}`)).status, (await cancel({})).status,
                     (await cancel({"X-CSRF-Token": csrf})).status];
           }""",
        site.jobs["bobs"],
    )
    assert got == [404, 403, 404]
    from db.claims import claim_job
    from db.workers import register_worker

    with site.api.stack.sessions()() as session:  # a worker running bob's job
        register_worker(session, name="w1@gpu-host", host="gpu-host", pid=4242,
                        queues=["cpu", "gpu"], device="cuda:0")  # fmt: skip
        assert claim_job(session, site.jobs["bobs"], worker="w1@gpu-host", host="gpu-host",
                         pid=4242, device="cuda:0", lease_s=600) is not None  # fmt: skip
    alice.go("/ui/fleet")
    assert alice.page.locator("#workers tbody tr").inner_text().split("\t")[4] == (
        "(another user's job)"
    )
    assert alice.page.locator("#by-status td[data-status='succeeded']").inner_text() != "0"
    alice.shot("fleet")
    assert alice.axe() == []
    alice.page.click("header form button")
    alice.page.wait_for_url("**/login")
    assert {c["name"] for c in alice.page.context.cookies()} <= {"kiln_csrf"}
    alice.go("/")
    assert "/login" in alice.page.url
