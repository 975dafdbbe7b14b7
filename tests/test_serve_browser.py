"""serve: the web page in headless Chromium (Playwright) — upload a CSV, ask, watch the actions stream, get the answer.

Needs the `playwright` Python package and a system Chromium (`apt-get install chromium`); `playwright install` is
not used. Skipped, saying which is missing, only when one of them is absent.
"""

from __future__ import annotations

import os
import shutil

import pytest
from doubles import ScriptedChatModel
from test_serve_api import LiveServer, agent_reply

from serve.app import create_app
from serve.config import ServeConfig

CHROMIUM = os.environ.get("DS_SYNTH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="the playwright Python package is not installed"),
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium)"),
]

QUESTION = """What is the mean of x? Plot it too.
```python
import pandas as pd
import matplotlib.pyplot as plt
df = pd.read_csv("sales.csv")
print("mean", df["x"].mean())
df["x"].plot()
df.describe().to_csv("summary.csv")
```"""


def test_page_uploads_asks_and_streams_the_answer(tmp_path):
    csv = tmp_path / "sales.csv"
    csv.write_text("x,y\n10,a\n20,b\n30,c\n")
    server = LiveServer(create_app(ServeConfig(workspace_root=tmp_path / "root"),
                                   model=ScriptedChatModel([agent_reply])))
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(server.url + "/")
                page.set_input_files("#file-input", str(csv))
                page.wait_for_selector("#files li:has-text('sales.csv')", timeout=15_000)
                page.fill("#question", QUESTION)
                page.click("#ask")

                page.wait_for_selector(".action-Answer", timeout=60_000)
                kinds = page.eval_on_selector_all(".action .tag", "els => els.map(e => e.textContent)")
                assert kinds[:3] == ["Analyze", "Code", "Execute"] and kinds[-1] == "Answer"
                assert "mean 20.0" in page.inner_text(".action-Execute pre")
                assert "mean 20.0" in page.inner_text(".action-Answer")
                assert "read_csv" in page.inner_text(".action-Code pre")
                # the figure is shown inline, loaded from the file-content URL
                page.wait_for_function(
                    "() => { const i = document.querySelector('.figure img'); return i && i.complete && i.naturalWidth > 0 }",
                    timeout=15_000,
                )
                page.wait_for_selector("#status:has-text('answered')", timeout=15_000)
                downloads = page.eval_on_selector_all("#downloads a", "els => els.map(e => e.textContent)")
                assert {"summary.csv", "figure_1.png", "report.md"} <= set(downloads)
                with page.expect_download() as info:
                    page.click("#downloads a:text-is('report.md')")
                report = open(info.value.path(), encoding="utf-8").read()
                assert report.startswith("# What is the mean of x?") and "mean 20.0" in report
                assert page.inner_text("#thread").startswith("thread_")
                assert errors == []
            finally:
                browser.close()
    finally:
        server.stop()
