"""The playground page of `lmsmith serve`: its files, its /explain numbers, and a real browser driving it.

The browser test needs Chromium and its driver (Debian: chromium, chromium-driver; .ci/run installs
them) and selenium; without them it is skipped, saying which is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from explain_models import random_model

from lmsmith.explain.explanation import explain_text
from lmsmith.model.directory import load_model_dir, save_model_dir
from lmsmith.schema.explain import ExplainConfig

SHAPE = dict(n_layer=2, n_head=2, n_embd=32, block_size=96, norm="layernorm", position="learned",
             feed_forward="gelu", bias=True)
SCREENSHOTS = Path(__file__).resolve().parents[2] / "work" / "screenshots"  # kept for a person to look at


class Server:
    """`lmsmith serve MODEL` on a free loopback port, in its own process."""

    def __init__(self, model_dir: Path, log: Path):
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lmsmith", "serve", str(model_dir), "--host", "127.0.0.1", "--port", "0",
             "--template", "chatml"], stdout=subprocess.DEVNULL, stderr=open(log, "w", encoding="utf-8"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = re.search(r" on (http://127\.0\.0\.1:\d+)/v1", log.read_text(encoding="utf-8"))
            if found:
                self.url = found.group(1)
                return
            if self.process.poll() is not None:
                raise RuntimeError(log.read_text(encoding="utf-8"))
            time.sleep(0.1)
        self.process.kill()
        raise RuntimeError("lmsmith serve did not start: " + log.read_text(encoding="utf-8"))

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=60) as response:
                return response.status, response.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8")

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(30)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("page")
    model_dir = save_model_dir(root / "run" / "model", random_model(tokenizer.vocab_size, **SHAPE), tokenizer,
                               made_by="test")
    server = Server(model_dir, root / "server.log")
    yield server, model_dir
    assert server.stop() == 0
    assert "Traceback" not in server.log.read_text(encoding="utf-8")


def test_the_page_is_served_whole_with_nothing_from_the_internet(served):
    server, _ = served
    status, page = server.get("/")
    assert status == 200 and "<script src=\"/static/page.js\">" in page
    for name in ("page.js", "page.css"):
        status, text = server.get(f"/static/{name}")
        assert status == 200 and text
        assert not re.search(r"https?://", text.replace("http://127.0.0.1", ""))
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page)
    assert server.get("/static/../api.py")[0] == 404 and server.get("/static/nothing.js")[0] == 404


def test_explain_endpoint_gives_the_models_numbers(served):
    server, model_dir = served
    text = "def add(a, b):\n    return a + b"
    status, shown = server.post("/explain", {"text": text})
    assert status == 200
    model, tokenizer = load_model_dir(model_dir)
    computed = explain_text(model, tokenizer, text, ExplainConfig(top_k=5), with_embeddings=False)
    np.testing.assert_allclose(np.array(shown["attention"]), computed["attention"], atol=1e-4)
    np.testing.assert_allclose(np.array(shown["next_token"]["probs"]), computed["next_token"]["probs"], atol=1e-4)
    assert np.array_equal(np.array(shown["logit_lens"]["ids"]), computed["logit_lens"]["ids"])
    assert [t["id"] for t in shown["tokens"]] == tokenizer.encode(text)
    assert server.post("/explain", {"text": ""})[1]["error"]["message"].startswith("the text to explain is empty")
    assert server.post("/explain", {"prompt": "x"})[0] == 400
    conversation = [{"role": "user", "content": "Hi"}]
    status, chat = server.post("/explain", {"messages": conversation})
    assert status == 200 and chat["text"].startswith("<|im_start|>user\nHi")
    assert server.post("/explain", {"messages": []})[0] == 400


def browser_or_skip():
    """A headless Chromium through selenium, or a skip naming what is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("no headless browser: install Chromium and its driver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1500"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(driver))


def test_a_browser_writes_streams_and_shows_attention(served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, _ = served
    browser = browser_or_skip()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: "context" in b.find_element(By.ID, "model-name").text)
        # Count the reply's pieces as they arrive: a stream shows more than one.
        browser.execute_script("window.pieces = 0; new MutationObserver(() => window.pieces++)"
                               ".observe(document.getElementById('output-reply'), {childList: true, subtree: true,"
                               " characterData: true});")
        browser.find_element(By.ID, "write").click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#tokens .tok"))
        assert browser.execute_script("return window.pieces") >= 2
        reply = browser.find_element(By.ID, "output-reply").text
        assert reply
        chips = browser.find_elements(By.CSS_SELECTOR, "#tokens .tok")
        chips[len(chips) // 2].click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#heatmap tbody tr"))
        assert len(browser.find_elements(By.CSS_SELECTOR, "#heatmap tbody tr")) == len(chips)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#topk li")) == 5
        assert len(browser.find_elements(By.CSS_SELECTOR, "#lens tr")) == SHAPE["n_layer"] + 2  # header, embedding
        browser.save_screenshot(str(SCREENSHOTS / "page-write.png"))
        browser.execute_script("document.getElementById('details').scrollIntoView()")
        browser.save_screenshot(str(SCREENSHOTS / "page-token.png"))

        browser.find_element(By.ID, "tab-chat").click()
        browser.find_element(By.ID, "max-tokens").clear()  # a short answer: the whole conversation fits the context
        browser.find_element(By.ID, "max-tokens").send_keys("8")
        browser.find_element(By.ID, "chat-input").send_keys("Hello there\n")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#messages .assistant")
                   and b.find_element(By.CSS_SELECTOR, "#messages .assistant").text)
        # The conversation is explained as the template lays it out: its own tokens, its own heatmap.
        wait.until(lambda b: "chat template" in b.find_element(By.ID, "explain-note").text)
        chips = browser.find_elements(By.CSS_SELECTOR, "#tokens .tok")
        pieces = browser.execute_script("return [...document.querySelectorAll('#tokens .tok')]"
                                        ".map((chip) => chip.firstChild.textContent).join('')")
        assert "<|im_start|>assistant" in pieces
        chips[-1].click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#heatmap tbody tr")) == len(chips))
        browser.save_screenshot(str(SCREENSHOTS / "page-chat.png"))
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [] and browser.find_element(By.ID, "error").get_attribute("hidden") is not None
    finally:
        browser.quit()
