"""Screenshots of the MLflow UI showing this project's own runs, for the docs.

    python -m jobs.screenshots [mlflow.tracking_uri=URI] [mlflow.experiment=sidbp]
        [out=docs/figures/mlflow] [chromium=/usr/bin/chromium] [GROUP=NAME ...] [key=value ...]

Starts ``mlflow server`` on 127.0.0.1 and a free port over the configuration's tracking URI
(``pipeline.adapters.tracking.tracking_uri``; an ``http(s)://`` URI is a server already, used as it is),
finds with ``MlflowClient`` the newest training run, evaluate run and sweep run (with its trials
and the version of the registered model it registered), and drives a headless Chromium through
Playwright (``pip install -e '.[docs]'``; it uses the system's ``chromium``, no browser download)
to save these 1500x950 PNGs under ``out`` (relative to the project root):

    01-runs-table.png              the experiment's runs, review tags and metrics as columns, sweep expanded
    02-train-run-overview.png      a training run: description, metrics, tags, run details
    03-train-run-metrics.png       its model-metrics charts: train/loss, train/lr, valid/avg_cost, valid/fill_rate
    04-train-run-artifact-plot.png its artifacts with plots/order_vs_on_hand.png open
    05-evaluation-table.png        the evaluate run's evaluation.json, an MLflow table, viewed as a table
    06-sweep-pareto.png            the sweep run's artifacts with plots/pareto.png open
    07-compare-trials.png          the compare-runs page of two trials: parameters and metrics that differ
    08-registered-model.png        the registered model: its versions and aliases (@champion, @challenger)
    09-logged-model.png            the training run's logged model (Models tab): its metrics, its run

The UI opens in its "Model training" mode with the MLflow Assistant panel and the "Detect issues"
guidance closed: the script sets the localStorage keys the UI reads on load (``mlflow.workflowType_v1``
and friends) and hides the Assistant's floating button with a style rule. Each screenshot waits for
its own content (a run name, a chart, an image, a table cell), then is checked for being blank
(too few colours or bytes). A failure is one line on stderr and exit code 1; a bad argument or a
missing experiment is a config error (exit 2), as are runs the experiment lacks. The server is
stopped at the end, also on errors.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from jobs import _cli
from pipeline.config import PROJECT_ROOT, ConfigError, load_config, resolve_path
from pipeline.errors import DataError
from pipeline.reporting import logs

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

DEFAULTS = {"out": "docs/figures/mlflow", "chromium": shutil.which("chromium") or "/usr/bin/chromium"}
VIEWPORT = {"width": 1500, "height": 950}
SERVER_START_S = 180      # a loaded 2-core machine needs well over a minute for the first /health
PAGE_TIMEOUT_MS = 60_000  # for each thing a page waits for
MIN_COLOURS = 256         # a screenshot with fewer distinct colours (right of the sidebar) is blank
MIN_BYTES = 20_000
SIDEBAR_PX = 200

PLOT = "plots/order_vs_on_hand.png"
EVALUATION_TABLE = "evaluation.json"
PARETO = "plots/pareto.png"
CHARTS = ("train/loss", "train/lr", "valid/avg_cost", "valid/fill_rate")
RUN_COLUMNS = {  # the runs table's columns (besides name, created, duration) and their widths in pixels
    "metrics.`test/learned/gap_pct`": 150, "metrics.`valid/avg_cost`": 120, "tags.`sidbp.kind`": 100,
    "tags.`problem`": 100, "tags.`instance`": 150, "tags.`policy_kind`": 110,
}

# what the UI reads from localStorage on load: "Model training" mode, Assistant and guidance popups closed
UI_STORAGE = {
    "mlflow.workflowType_v1": json.dumps("machine_learning"),
    "mlflow.assistant.panelOpen_v1": "false",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
    "mlflow.detectIssues.guidanceShown_v1": "true",
    "mlflow.flagForReview.guidanceShown_v1": "true",
}
HIDE_ASSISTANT_CSS = "[data-assistant-ui] { display: none !important; }"
ERROR_TEXTS = ("Page Not Found", "Something went wrong")


class ScreenshotError(RuntimeError):
    """The server, the browser or a page did not do what a screenshot needs."""


# ---------------------------------------------------------------- arguments


def split_args(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """The configuration's arguments, and this script's own (``out=``, ``chromium=``) over DEFAULTS."""
    config_args, opts = [], dict(DEFAULTS)
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in DEFAULTS:
            opts[key] = value
        else:
            config_args.append(arg)
    return config_args, opts


# ---------------------------------------------------------------- the MLflow server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(uri: str) -> Iterator[str]:
    """The base URL of an MLflow server over ``uri``: ``uri`` itself when it is a server, else a new
    ``mlflow server`` on 127.0.0.1, whose process group is stopped on exit."""
    if uri.startswith(("http://", "https://")):
        yield uri.rstrip("/") + "/"
        return
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sidbp-mlflow-ui-") as tmp:  # its cwd: nothing lands in the repo
        log = Path(tmp) / "server.log"
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(log, "wb") as out:
            server = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}/"
            wait_healthy(base, server, log)
            yield base
        finally:
            stop(server)


def wait_healthy(base: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ScreenshotError(f"mlflow server exited with code {server.returncode}: {last_line(log)}")
        try:
            with urllib.request.urlopen(base + "health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise ScreenshotError(f"mlflow server at {base} not healthy after {SERVER_START_S}s: {last_line(log)}")


def last_line(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else "(no output)"


def stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (it runs uvicorn as a child), SIGKILL after 15 s."""
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, sig)
        try:
            server.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


# ---------------------------------------------------------------- the runs to show


@dataclass
class Targets:
    experiment_id: str
    train: Run
    table_run: Run       # the evaluate run, or the training run when there is none
    sweep: Run
    trials: list[Run]    # the sweep's first two
    model: str           # the registered model
    version: ModelVersion  # the one the sweep registered
    logged_model: str      # the training run's MLflow model (its model id)


def find_targets(client, experiment_name: str, uri: str) -> Targets:
    from pipeline.adapters.registry import CHALLENGER
    from pipeline.adapters.tracking import KIND_TAG, PARENT_TAG

    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        known = sorted(e.name for e in client.search_experiments())
        raise ConfigError(f"mlflow.experiment {experiment_name!r} not found at {uri}; "
                          f"known: {', '.join(known) or 'none'}")
    eid = experiment.experiment_id

    def runs(query: str, n: int = 20, order: str = "DESC") -> list:
        return client.search_runs([eid], query, order_by=[f"attributes.start_time {order}"], max_results=n)

    def missing(what: str, job: str) -> DataError:
        return DataError(f"no {what} in experiment {experiment_name!r} at {uri}; run python -m jobs.{job} first")

    train = next(iter(runs(f"tags.`{KIND_TAG}` = 'train'", 1)), None)
    if train is None:
        raise missing("training run (tag sidbp.kind = 'train')", "train")
    evaluate = next(iter(runs(f"tags.`{KIND_TAG}` = 'evaluate'", 1)), None)
    sweep = next((r for r in runs(f"tags.`{KIND_TAG}` = 'sweep'") if CHALLENGER in r.data.tags), None)
    if sweep is None:
        raise missing(f"sweep run with a {CHALLENGER!r} tag", "sweep")
    trials = runs(f"tags.`{PARENT_TAG}` = '{sweep.info.run_id}'", 2, "ASC")
    if len(trials) < 2:
        raise missing(f"two trials of sweep run {sweep.info.run_id}", "sweep")
    model = model_name(sweep.data.tags[CHALLENGER])
    outputs = client.get_run(train.info.run_id).outputs
    logged = [m.model_id for m in (outputs.model_outputs if outputs else [])]
    if not logged:
        raise missing(f"MLflow model logged by training run {train.info.run_id}", "train")
    return Targets(eid, train, evaluate or train, sweep, trials, model,
                   client.get_model_version(model, sweep.data.tags[CHALLENGER].rsplit("/", 1)[1]), logged[-1])


def model_name(model_uri: str) -> str:
    """``NAME`` of ``models:/NAME/VERSION``."""
    match = re.fullmatch(r"models:/(.+)/[^/]+", model_uri)
    if not match:
        raise DataError(f"expected models:/NAME/VERSION in the sweep run's challenger tag, got {model_uri!r}")
    return match.group(1)


# ---------------------------------------------------------------- the pages


def run_url(base: str, t: Targets, run: Run, tab: str = "") -> str:
    return f"{base}#/experiments/{t.experiment_id}/runs/{run.info.run_id}" + (f"/{tab}" if tab else "")


def runs_table(page, base: str, t: Targets) -> None:
    # the table's columns and expanded rows: the experiment page's saved state, which the UI
    # reads on load over its defaults
    key = f"MLflowLocalStorage-1.1-ExperimentPage-{json.dumps([t.experiment_id])}-ReactComponentState"
    state = {"selectedColumns": list(RUN_COLUMNS),
             "columnOrder": ["attributes.`Run Name`", "runDateAndNestInfo", "duration", *RUN_COLUMNS],
             "columnWidths": RUN_COLUMNS, "runsExpanded": {t.sweep.info.run_id: True}}
    page.add_init_script(f"localStorage.setItem({json.dumps(key)}, {json.dumps(json.dumps(state))});")
    page.goto(f"{base}#/experiments/{t.experiment_id}/runs")
    page.get_by_text("matching runs").wait_for()
    page.get_by_role("link", name=t.trials[0].info.run_name, exact=True).wait_for()
    page.get_by_role("columnheader", name="sidbp.kind").first.wait_for()


def run_overview(page, base: str, t: Targets) -> None:
    page.goto(run_url(base, t, t.train))
    page.get_by_text(t.train.info.run_id, exact=True).wait_for()
    page.get_by_text(re.compile(r"^Metrics \(\d+\)$")).wait_for()
    page.get_by_text("sidbp.kind", exact=True).first.wait_for()


def run_metrics(page, base: str, t: Targets) -> None:
    page.goto(run_url(base, t, t.train, "model-metrics"))
    charts = [m for m in CHARTS if m in t.train.data.metrics]
    if not charts:
        raise ScreenshotError(f"training run {t.train.info.run_id} has none of the metrics {', '.join(CHARTS)}")
    page.get_by_placeholder("Search metric charts").fill("^(" + "|".join(map(re.escape, charts)) + ")$")
    last = page.locator(".js-plotly-plot").nth(len(charts) - 1)
    last.wait_for()
    page.locator(".js-plotly-plot .js-line").nth(len(charts) - 1).wait_for()
    last.scroll_into_view_if_needed()


def artifact(run_of: Callable[[Targets], Run], path: str) -> Callable:
    """A page function that opens ``path`` among the artifacts of ``run_of(targets)``."""
    def show(page, base: str, t: Targets) -> None:
        page.goto(run_url(base, t, run_of(t), "artifacts/" + path))
        if path.endswith(".png"):
            image = page.locator(f'img[alt="{path}"]')
            image.wait_for()
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
        else:  # a table: its header row
            page.get_by_role("columnheader").first.wait_for()
    return show


def compare_trials(page, base: str, t: Targets) -> None:
    ids = [r.info.run_id for r in t.trials]
    query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([t.experiment_id])})
    page.goto(f"{base}#/compare-runs?{query}")
    page.get_by_text(f"Comparing {len(ids)} Runs").wait_for()
    page.get_by_text(t.trials[0].info.run_id).first.wait_for()
    for section in ("Visualizations", "Run details"):  # collapsed: the parameters and metrics come up
        page.get_by_text(section, exact=True).click()
    switches = page.get_by_role("switch")  # "Show diff only", one per table
    for i in range(switches.count()):
        switches.nth(i).click()
    page.locator('[role=switch][aria-checked="true"]').nth(switches.count() - 1).wait_for()
    page.evaluate("document.querySelector('main').scrollTo(0, 0)")


def registered_model(page, base: str, t: Targets) -> None:
    page.goto(f"{base}#/models/{urllib.parse.quote(t.model)}")
    page.get_by_role("link", name=f"Version {t.version.version}", exact=True).wait_for()
    for alias in t.version.aliases[:1]:  # promoted (champion), or still the challenger
        page.locator(f'[role=cell] [title="{alias}"]').wait_for()

def logged_model(page, base: str, t: Targets) -> None:
    page.goto(f"{base}#/experiments/{t.experiment_id}/models/{t.logged_model}")
    page.get_by_text(t.logged_model).first.wait_for()
    page.get_by_text("test/learned/avg_cost").first.wait_for()


SHOTS: list[tuple[str, Callable]] = [
    ("01-runs-table.png", runs_table),
    ("02-train-run-overview.png", run_overview),
    ("03-train-run-metrics.png", run_metrics),
    ("04-train-run-artifact-plot.png", artifact(lambda t: t.train, PLOT)),
    ("05-evaluation-table.png", artifact(lambda t: t.table_run, EVALUATION_TABLE)),
    ("06-sweep-pareto.png", artifact(lambda t: t.sweep, PARETO)),
    ("07-compare-trials.png", compare_trials),
    ("08-registered-model.png", registered_model),
    ("09-logged-model.png", logged_model),
]


# ---------------------------------------------------------------- the browser


def new_context(browser):
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    storage = "".join(f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)});" for k, v in UI_STORAGE.items())
    style = (f"document.addEventListener('DOMContentLoaded', () => {{ const s = document.createElement('style'); "
             f"s.textContent = {json.dumps(HIDE_ASSISTANT_CSS)}; document.head.appendChild(s); }});")
    context.add_init_script(storage + style)
    return context


def take(context, name: str, show: Callable, base: str, t: Targets, out: Path) -> Path:
    """Open a fresh page, let ``show`` bring up and wait for its content, save and check the PNG."""
    from playwright.sync_api import Error as PlaywrightError

    page = context.new_page()
    try:
        show(page, base, t)
        for text in ERROR_TEXTS:
            if page.get_by_text(text).count():
                raise ScreenshotError(f"{name}: the page says {text!r} ({page.url})")
        page.wait_for_timeout(500)  # the last layout and chart transitions
        path = out / name
        page.screenshot(path=str(path))
    except PlaywrightError as e:
        seen = Path(tempfile.gettempdir()) / f"sidbp-screenshots-failed-{name}"
        with contextlib.suppress(PlaywrightError):
            page.screenshot(path=str(seen))
        raise ScreenshotError(f"{name}: {waited_for(e)} at {page.url}; the page then: {seen}") from None
    finally:
        page.close()
    check_screenshot(path)
    return path


def waited_for(e: Exception) -> str:
    """The first line of a Playwright error, with the locator it waited for when it says."""
    lines = [line.strip() for line in str(e).strip().splitlines()]
    waiting = next((line for line in lines if line.startswith("- waiting for")), "")
    return lines[0] + (f" ({waiting[2:]})" if waiting else "")


def check_screenshot(path: Path, min_colours: int = MIN_COLOURS, min_bytes: int = MIN_BYTES) -> None:
    """A ``ScreenshotError`` when the PNG looks blank: right of the sidebar fewer than ``min_colours``
    distinct colours, or the file under ``min_bytes``."""
    colours, size = image_stats(path)
    if colours < min_colours or size < min_bytes:
        raise ScreenshotError(f"{path} looks blank: {colours} distinct colours right of the sidebar, {size} bytes "
                              f"(a page shows at least {min_colours} and {min_bytes}); see it for a spinner or error")


def image_stats(path: Path) -> tuple[int, int]:
    """(distinct colours right of the sidebar, file size in bytes) of a PNG."""
    from PIL import Image

    with Image.open(path) as image:
        content = image.convert("RGB").crop((min(SIDEBAR_PX, image.width - 1), 0, image.width, image.height))
        colours = content.getcolors(maxcolors=content.width * content.height)
    return len(colours), path.stat().st_size


def require_browser(chromium: str) -> None:
    """Playwright and the Chromium it drives are there (checked before a server is started)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise ScreenshotError("playwright is not installed: pip install -e '.[docs]'") from None
    if not Path(chromium).exists():
        raise FileNotFoundError(f"chromium not found at {chromium!r} (apt-get install chromium, or chromium=PATH)")


def screenshot_all(base: str, t: Targets, out: Path, chromium: str) -> list[Path]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            context = new_context(browser)
            return [take(context, name, show, base, t, out) for name, show in SHOTS]
        finally:
            browser.close()


# ---------------------------------------------------------------- main


def main(args: list[str]) -> int:
    config_args, opts = split_args(args)
    cfg = load_config(config_args)
    from mlflow.tracking import MlflowClient

    from pipeline.adapters.tracking import tracking_uri

    uri = tracking_uri(cfg)
    out = Path(opts["out"])
    out = resolve_path(str(out))
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        require_browser(opts["chromium"])
        with mlflow_server(uri) as base:
            targets = find_targets(MlflowClient(base), cfg.mlflow.experiment, uri)
            logs.get("").info(f"MLflow UI at {base} over {uri}: experiment {cfg.mlflow.experiment!r}, training run "
                              f"{targets.train.info.run_id}, sweep {targets.sweep.info.run_id}, "
                              f"models:/{targets.model}/{targets.version.version}")
            paths = screenshot_all(base, targets, out, opts["chromium"])
    except ScreenshotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    plain = logs.get("")
    for path in paths:
        plain.info(f"  {path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path}")
    plain.info(f"{len(paths)} screenshots in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    _cli.run("screenshots", main)
