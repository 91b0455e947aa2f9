"""Cerulean Studio in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
driven by Selenium) against real ``cerulean serve`` processes.

Without ``/usr/bin/chromium`` these tests skip, unless ``CERULEAN_TEST_CHROMIUM`` (set by
``.ci/run``) or ``CI`` is set: then they fail. ``CERULEAN_STUDIO_SCREENSHOTS=DIR`` saves a PNG of
each page there (how ``docs/studio/`` was made).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AzureOpenAI

from tests.e2e.conftest import Server, free_port

CHROMIUM = Path(os.environ.get("CERULEAN_TEST_CHROMIUM") or "/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
_STRICT = bool(os.environ.get("CERULEAN_TEST_CHROMIUM") or os.environ.get("CI"))
SCREENSHOTS = os.environ.get("CERULEAN_STUDIO_SCREENSHOTS")

pytestmark = pytest.mark.slow
WAIT_S = 90.0


def _browser(*, javascript: bool = True) -> Any:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = (
            f"headless Chromium is missing ({CHROMIUM}, {CHROMEDRIVER}): "
            "apt-get install -y chromium chromium-driver"
        )
        if _STRICT:
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1100,820",
        "--disable-extensions",
    ):
        options.add_argument(flag)
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = _browser()
    yield driver
    driver.quit()


def wait_for(check: Callable[[], Any], timeout: float = WAIT_S, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except Exception:  # an element not there yet
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.1)


def studio_token(server: Server) -> str:
    return (server.home / "studio.token").read_text().strip()


def shot(browser: Any, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(SCREENSHOTS) / f"{name}.png"))


def by(browser: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, css)


def sign_in(browser: Any, server: Server, token: str) -> None:
    browser.delete_all_cookies()
    browser.get(f"{server.endpoint}studio")
    wait_for(lambda: by(browser, "#token"), what="the sign-in form")
    shot(browser, "sign-in")
    from selenium.webdriver.common.keys import Keys

    by(browser, "#token").send_keys(token, Keys.ENTER)  # the keyboard alone signs in


def signed_in(browser: Any, server: Server) -> None:
    sign_in(browser, server, studio_token(server))
    wait_for(lambda: "/studio/playground" in browser.current_url, what="the playground")


def click_confirm(browser: Any) -> None:
    wait_for(lambda: by(browser, "#confirm"), what="the confirmation").click()


def total(browser: Any, metric: str) -> float:
    return float(by(browser, f"#chart-{metric} .total").get_attribute("data-total"))


# -- the shared real server (real model) ----------------------------------------------------


def test_the_banner_prints_the_studio_address(server: Server) -> None:
    output = server.output()
    assert f"Open Cerulean Studio in your browser: {server.endpoint}studio\n" in output
    assert f"sign-in token: {studio_token(server)}" in output


def test_a_wrong_token_is_refused(browser: Any, server: Server) -> None:
    sign_in(browser, server, "not-the-token")
    wait_for(lambda: by(browser, ".error"), what="the refusal")
    assert "not this server's sign-in token" in by(browser, ".error").text
    assert "/studio/sign-in" in browser.current_url
    assert browser.get_cookie("cerulean_studio") is None
    browser.get(f"{server.endpoint}studio/keys")
    assert "/studio/sign-in" in browser.current_url  # still signed out


def test_sign_in_and_stream_an_answer(browser: Any, server: Server) -> None:
    signed_in(browser, server)
    cookie = browser.get_cookie("cerulean_studio")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert browser.execute_script("return document.cookie") == ""  # the script cannot read it
    browser.get(f"{server.endpoint}studio/usage?range=hour")
    before = total(browser, "requests")
    browser.get(f"{server.endpoint}studio/playground")
    from selenium.webdriver.support.ui import Select

    Select(by(browser, "#deployment")).select_by_value("gpt-4o")
    by(browser, "#max_tokens").send_keys("12")
    by(browser, "#message").send_keys("Say hello.")
    by(browser, "#send").click()
    stats = wait_for(
        lambda: by(browser, ".msg.assistant .stats").text, what="the answer's usage line"
    )
    assert re.search(r"\d+ prompt \+ \d+ completion tokens · \d+ ms", stats), stats
    answer = by(browser, ".msg.assistant .content").text
    assert answer and not answer.startswith("Error"), answer
    shot(browser, "playground")
    by(browser, "#view-code").click()
    python = wait_for(lambda: by(browser, "#code-python").text, what="the code")
    assert "model='gpt-4o'" in python and "max_tokens=12" in python
    assert "Say hello." in python and server.key1 not in python
    assert "$AZURE_OPENAI_API_KEY" in by(browser, "#code-curl").text
    shot(browser, "playground-code")

    def counted() -> bool:  # usage is written about once a second
        browser.get(f"{server.endpoint}studio/usage?range=hour")
        return total(browser, "requests") >= before + 1

    wait_for(counted, timeout=15, what="the answer in the usage chart")
    assert total(browser, "completion_tokens") > 0
    assert "gpt-4o" in by(browser, ".legend").text
    shot(browser, "usage")


def test_create_and_delete_a_deployment(browser: Any, server: Server) -> None:
    signed_in(browser, server)
    browser.get(f"{server.endpoint}studio/deployments")
    from selenium.webdriver.support.ui import Select

    by(browser, "#new-name").send_keys("studio-made")
    models = Select(by(browser, "#new-model"))
    chat_model = next(o for o in models.options if "chat_completion" in o.text)
    models.select_by_value(chat_model.get_attribute("value"))
    capacity = by(browser, "#new-capacity")
    capacity.clear()
    capacity.send_keys("2")
    by(browser, "#create button[type=submit]").click()
    wait_for(lambda: "Created studio-made" in by(browser, ".notice").text, what="the notice")
    assert by(browser, "#deployment-studio-made")
    shot(browser, "deployments")
    client = AzureOpenAI(
        azure_endpoint=server.endpoint, api_key=server.key1, api_version="2024-10-21"
    )
    reply = client.chat.completions.create(
        model="studio-made", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    browser.get(f"{server.endpoint}studio/deployments")
    row = by(browser, "#deployment-studio-made").text
    assert re.search(r"1 / 2\b", row), row  # its request window holds the request: 1 of 2
    by(browser, "#deployment-studio-made button.danger").click()
    click_confirm(browser)
    wait_for(lambda: "Deleted studio-made" in by(browser, ".notice").text, what="the deletion")
    from openai import NotFoundError

    with pytest.raises(NotFoundError):
        client.chat.completions.create(
            model="studio-made", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )


def test_regenerate_a_key_and_use_it(browser: Any, server: Server) -> None:
    signed_in(browser, server)
    browser.get(f"{server.endpoint}studio/keys")
    assert by(browser, "#endpoint").get_attribute("value") == server.endpoint
    masked = by(browser, "#key-key2 .masked").text
    assert masked.endswith("****")
    shot(browser, "keys")
    by(browser, "#key-key2 button.danger").click()  # key2: the other tests use key1
    click_confirm(browser)
    field = wait_for(lambda: by(browser, "#value-key2"), what="the new key")
    new_key = field.get_attribute("value")
    assert re.fullmatch(r"[0-9a-f]{32}", new_key) and new_key[:4] + "****" != masked
    client = AzureOpenAI(azure_endpoint=server.endpoint, api_key=new_key, api_version="2024-10-21")
    reply = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert reply.choices[0].message.content is not None

    def per_key() -> bool:  # the call counts under key2 on the usage page, per key
        browser.get(f"{server.endpoint}studio/usage?range=hour&by=key")
        return "key2" in by(browser, ".legend").text

    wait_for(per_key, timeout=15, what="key2 in the usage chart")
    shot(browser, "usage-per-key")
    assert "studio" in by(browser, ".legend").text  # the playground's answers


def test_a_cross_site_form_post_is_refused(browser: Any, server: Server) -> None:
    signed_in(browser, server)
    target = f"{server.endpoint}studio/deployments"
    page = (
        f'<html><body><form id="f" method="post" action="{target}">'
        '<input name="name" value="cross-site"><input name="model" value="gemma-3-270m">'
        '<input name="capacity" value="1"><input name="csrf" value="guess"></form>'
        "<script>document.getElementById('f').submit()</script></body></html>"
    ).encode()

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    evil = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        # localhost is another site than 127.0.0.1 for the browser: SameSite=Strict holds back
        # the cookie, and the Origin check refuses the post anyway
        browser.get(f"http://localhost:{evil.server_address[1]}/")
        wait_for(lambda: "/studio/" in browser.current_url, what="the cross-site post")
        refusal = wait_for(lambda: by(browser, ".error").text, what="the refusal")
        assert "came from another site" in refusal
        assert "Created cross-site" not in by(browser, "body").text
    finally:
        evil.shutdown()
    listing = httpx.get(
        f"{server.endpoint}openai/deployments?api-version=2022-12-01",
        headers={"api-key": server.key1},
    ).json()
    assert "cross-site" not in {d["id"] for d in listing["data"]}


def cerulean(server: Server, *args: str) -> str:
    """``cerulean ARGS --home`` the server's home (what an operator would type)."""
    done = subprocess.run(
        [sys.executable, "-m", "cerulean", *args, "--home", str(server.home)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def batch_lines(model: str, count: int) -> bytes:
    lines = []
    for i in range(count):
        body = {
            "model": model,
            "messages": [{"role": "user", "content": f"Count to {i}."}],
            "max_tokens": 16,
        }
        lines.append(
            {"custom_id": f"task-{i}", "method": "POST", "url": "/chat/completions", "body": body}
        )
    return "\n".join(json.dumps(line) for line in lines).encode()


def test_cancel_a_batch(browser: Any, server: Server) -> None:
    client = AzureOpenAI(
        azure_endpoint=server.endpoint, api_key=server.key1, api_version="2024-10-21"
    )

    def submit(content: bytes) -> str:
        uploaded = client.files.create(file=("input.jsonl", content), purpose="batch")
        return client.batches.create(
            input_file_id=uploaded.id, endpoint="/chat/completions", completion_window="24h"
        ).id

    failed = submit(batch_lines("no-such-deployment", 2))  # fails its validation
    long = submit(batch_lines("gpt-4", 200))
    signed_in(browser, server)
    browser.get(f"{server.endpoint}studio/batches")
    by(browser, f"#batch-{long} button.danger").click()
    click_confirm(browser)
    notice = wait_for(lambda: by(browser, ".notice").text, what="the cancellation")
    assert notice in (f"{long} is cancelling.", f"{long} is cancelled."), notice

    def settled() -> bool:
        browser.get(f"{server.endpoint}studio/batches")
        statuses = {b: by(browser, f"#batch-{b} .status").text for b in (failed, long)}
        return statuses == {failed: "failed", long: "cancelled"}

    wait_for(settled, timeout=60, what="the failed and cancelled batches")
    assert not browser.find_elements("css selector", f"#batch-{long} button.danger")
    shot(browser, "batches")
    assert client.batches.retrieve(long).status == "cancelled"


def test_a_blocklist_item_added_in_the_studio_filters(browser: Any, server: Server) -> None:
    from selenium.webdriver.support.ui import Select

    signed_in(browser, server)
    browser.get(f"{server.endpoint}studio/content-filters")
    by(browser, "#blocklist-name").send_keys("studio-words")
    by(browser, "#blocklist-description").send_keys("Places we never discuss")
    by(browser, "#create-blocklist button[type=submit]").click()
    wait_for(lambda: "Created blocklist studio-words." in by(browser, ".notice").text)
    by(browser, "#pattern-studio-words").send_keys("Zanzibar")
    by(browser, "#add-item-studio-words button[type=submit]").click()
    wait_for(lambda: "Added phrase 'Zanzibar'" in by(browser, ".notice").text, what="the item")
    by(browser, "#pattern-studio-words").send_keys(r"atlantis\d+")
    by(browser, "#regex-studio-words").click()
    by(browser, "#add-item-studio-words button[type=submit]").click()
    wait_for(lambda: "Added regular expression" in by(browser, ".notice").text, what="the regex")
    cerulean(server, "policies", "create", "studio-strict", "--blocklist", "studio-words")
    browser.get(f"{server.endpoint}studio/content-filters")
    Select(by(browser, "#assign-deployment")).select_by_value("gpt-4")
    Select(by(browser, "#assign-policy")).select_by_value("studio-strict")
    by(browser, "#assign button[type=submit]").click()
    wait_for(lambda: "gpt-4 uses policy studio-strict" in by(browser, ".notice").text)
    assert "gpt-4" in by(browser, "#policy-studio-strict .users").text
    shot(browser, "content-filters")
    client = AzureOpenAI(
        azure_endpoint=server.endpoint, api_key=server.key1, api_version="2024-10-21"
    )
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "Tell me about Zanzibar."}]
        )
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "content_filter"
    Select(by(browser, "#assign-deployment")).select_by_value("gpt-4")  # back to the default
    Select(by(browser, "#assign-policy")).select_by_value("Microsoft.DefaultV2")
    by(browser, "#assign button[type=submit]").click()
    wait_for(lambda: "gpt-4 uses policy Microsoft.DefaultV2" in by(browser, ".notice").text)
    reply = client.chat.completions.create(
        model="gpt-4",
        messages=[{"role": "user", "content": "Tell me about Zanzibar."}],
        max_tokens=4,
        temperature=0,  # one answer, not a sample that the harm classifier may misread
    )
    assert reply.choices[0].finish_reason != "content_filter"


def test_assign_and_remove_a_role(browser: Any, server: Server) -> None:
    from selenium.webdriver.support.ui import Select

    user = "6b1c3f0e-2a4d-4e8b-9c7a-1f2e3d4c5b6a"
    operator = "0d9e8f7a-6b5c-4d3e-8f1a-2b3c4d5e6f70"
    signed_in(browser, server)
    browser.get(f"{server.endpoint}studio/roles")
    for principal, role in (
        (user, "Cognitive Services OpenAI User"),
        (operator, "Cognitive Services Contributor"),
    ):
        by(browser, "#principal").send_keys(principal)
        Select(by(browser, "#role")).select_by_value(role)
        by(browser, "#assign-role button[type=submit]").click()
        wait_for(lambda r=role: f"now holds '{r}'" in by(browser, ".notice").text, what=role)
    shot(browser, "roles")
    listed = json.loads(cerulean(server, "roles", "list", "--json"))
    held = {(r["principalId"], r["roleDefinitionName"]) for r in listed}
    assert (user, "Cognitive Services OpenAI User") in held
    assert (operator, "Cognitive Services Contributor") in held
    row = next(
        r
        for r in browser.find_elements("css selector", "#assignments tbody tr")
        if r.get_attribute("data-principal") == user
    )
    row.find_element("css selector", "button.danger").click()
    click_confirm(browser)
    wait_for(lambda: f"{user} no longer holds" in by(browser, ".notice").text, what="the removal")
    listed = json.loads(cerulean(server, "roles", "list", "--json"))
    assert [r["principalId"] for r in listed] == [operator]


_UNLABELLED = """
return [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
               && !(e.tagName === 'BUTTON' && e.textContent.trim()))
  .map(e => e.id || e.name || e.outerHTML.slice(0, 60));
"""


def test_every_page_is_labelled_and_keyboard_reachable(browser: Any, server: Server) -> None:
    from selenium.webdriver.common.keys import Keys

    signed_in(browser, server)
    pages = ("playground", "deployments", "keys", "usage", "upstreams", "batches")
    for name in (*pages, "content-filters", "roles"):
        browser.get(f"{server.endpoint}studio/{name}")
        assert browser.execute_script(_UNLABELLED) == [], name
        assert by(browser, "nav a[aria-current=page]").get_attribute("href").endswith(name)
        by(browser, "body").send_keys(Keys.TAB)  # the first stop is the skip link
        focused = browser.switch_to.active_element
        assert focused.get_attribute("class") == "skip", name
        assert (
            browser.execute_script("return document.querySelectorAll('script:not([src])').length")
            == 0
        )  # no inline script (the CSP forbids it)


def test_without_javascript_everything_but_streaming_works(server: Server) -> None:
    plain = _browser(javascript=False)
    try:
        signed_in(plain, server)
        plain.get(f"{server.endpoint}studio/playground")
        by(plain, "#max_tokens").send_keys("6")
        by(plain, "#message").send_keys("Say hello.")
        by(plain, "#send").click()  # a plain form post: the answer comes whole
        stats = wait_for(lambda: by(plain, "#last-stats").text, what="the answer")
        assert re.search(r"Tokens: \d+ prompt, \d+ completion · \d+ ms", stats), stats
        assert by(plain, ".msg.assistant .content")
        by(plain, "#view-code").click()
        assert "max_tokens=6" in wait_for(lambda: by(plain, "#code-python").text, what="code")
        plain.get(f"{server.endpoint}studio/keys")
        by(plain, "#key-key1 form button").click()  # Show
        assert wait_for(lambda: by(plain, "#value-key1")).get_attribute("value") == server.key1
        assert not by(plain, "#key-key1 button.copy").is_displayed()  # the script never ran
    finally:
        plain.quit()


# -- a light server (no model) with short sessions ----------------------------------------


@pytest.fixture(scope="module")
def short_sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"CERULEAN_STUDIO_SESSION_SECONDS": "3"}
    server = Server(
        home=tmp_path_factory.mktemp("studio") / "home",
        extra_args=["--no-embedded", "--no-embeddings"],
        env=env,
    ).start()
    yield server
    server.stop()


def test_an_expired_session_is_refused(browser: Any, short_sessions: Server) -> None:
    signed_in(browser, short_sessions)
    browser.get(f"{short_sessions.endpoint}studio/upstreams")
    assert by(browser, "h1").text == "Upstreams"
    shot(browser, "upstreams")
    time.sleep(3.5)
    browser.get(f"{short_sessions.endpoint}studio/keys")
    wait_for(lambda: "/studio/sign-in" in browser.current_url, what="the sign-in page")
    assert "expired" in by(browser, "main").text
