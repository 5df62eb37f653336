"""The alert page in a real headless browser (issue 15 §3): Debian's chromium driven by chromedriver (selenium),
against alert-forwarder under the real of-watchdog behind the local gateway (/function/alert-forwarder/ui).

It loads after a sign-in, filters, updates when a new alert arrives, refuses without a login, and writes the
screenshot (docs/img/alert-forwarder-ui.png when EDGEGUARD_UPDATE_SCREENSHOT=1; otherwise into the test's
temporary folder, so a test run leaves the tree clean).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import requests

from local import components

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WATCHDOG_SKIP = components.locate().watchdog_skip_reason()
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "img" / "alert-forwarder-ui.png"

pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason=components.needs_real("chromium and chromedriver (apt-get install -y chromium chromium-driver)"),
    ),
    pytest.mark.skipif(WATCHDOG_SKIP is not None, reason=WATCHDOG_SKIP or ""),
]


@pytest.fixture
def stack(tmp_path):
    from local.gateway import LocalStack, free_port

    s = LocalStack(
        port=free_port(),
        state_dir=tmp_path / "state",
        functions=["alert-forwarder"],
        kube="none",
        env_overrides={"alert-forwarder": {"retry_tick_seconds": "0.2"}},
    )
    s.start()
    yield s
    s.stop()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,900",
        f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path, prefix='chromium-')}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def post(stack, token, alert):
    r = requests.post(
        f"{stack.url}/function/alert-forwarder", json=alert, timeout=10, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 202, r.text


def wait(driver, pred, what, timeout=15):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: pred(d), message=what)


def rules(driver):
    # Read in one script call: the table is re-rendered every 2 s, so element handles go stale.
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#rows tr.alert td.rule')).map(e => e.textContent)"
    )


def test_the_alert_page_loads_filters_updates_and_needs_a_login(stack, browser, h, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    token = stack.secret("alert-forwarder-token")
    for rule, prio, src in (
        ("Terminal shell in container", "Warning", "syscall"),
        ("Create/Modify Configmap With Private Credentials", "Critical", "k8s_audit"),
        ("Read sensitive file untrusted", "Notice", "syscall"),
        ("<img src=x onerror=alert(1)>", "Error", "syscall"),
    ):
        post(stack, token, h.falco_alert(rule=rule, priority=prio, source=src))
    page = f"{stack.url}/function/alert-forwarder/ui"

    # Without a login: the sign-in form, and the data refuses the browser.
    browser.get(page)
    assert browser.find_element(By.ID, "login").is_displayed()
    assert browser.find_elements(By.ID, "rows") == []
    status = browser.execute_async_script(
        "const done=arguments[0]; fetch('alerts',{credentials:'same-origin'}).then(r=>done(r.status))"
    )
    assert status == 401

    # A wrong token is refused; the right one signs in, without ever being in a URL.
    browser.find_element(By.ID, "token").send_keys("not-the-token")
    browser.find_element(By.ID, "sign-in").click()
    wait(browser, lambda d: d.find_elements(By.ID, "login-error"), "the refusal")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "sign-in").click()
    wait(browser, lambda d: len(rules(d)) == 4, "4 alerts in the table")
    assert token not in browser.current_url
    cookie = browser.get_cookie("edgeguard_af_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and token not in cookie["value"]
    assert browser.execute_script("return document.cookie") == ""  # HttpOnly: scripts cannot read it
    # The markup in a rule name is text, never HTML.
    assert "<img src=x onerror=alert(1)>" in rules(browser)
    assert browser.execute_script("return document.querySelectorAll('#rows img').length") == 0
    # Health: spool depth and every destination's state; the chart counted the 4 alerts.
    assert browser.execute_script("return document.querySelector('#card-spool b').textContent") == "0"
    cards = browser.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll("
        "'#cards [data-destination]')).map(e => [e.dataset.destination, e.textContent]))"
    )
    assert set(cards) == {"console", "action-centre", "configmap-secret-scrubber"}
    assert "disabled" in cards["action-centre"]
    wait(browser, lambda d: d.find_element(By.ID, "chart").get_attribute("data-total") == "4", "the chart")

    # Filters: priority, rule, source and destination state.
    Select(browser.find_element(By.ID, "f-priority")).select_by_value(">=Error")
    wait(
        browser,
        lambda d: (
            sorted(rules(d)) == ["<img src=x onerror=alert(1)>", "Create/Modify Configmap With Private Credentials"]
        ),
        "priority",
    )
    Select(browser.find_element(By.ID, "f-priority")).select_by_value("")
    Select(browser.find_element(By.ID, "f-source")).select_by_value("k8s_audit")
    wait(browser, lambda d: rules(d) == ["Create/Modify Configmap With Private Credentials"], "source")
    Select(browser.find_element(By.ID, "f-source")).select_by_value("")
    browser.find_element(By.ID, "f-rule").send_keys("shell")
    wait(browser, lambda d: rules(d) == ["Terminal shell in container"], "rule")
    browser.find_element(By.ID, "f-rule").clear()
    browser.execute_script("document.getElementById('f-rule').dispatchEvent(new Event('input'))")
    Select(browser.find_element(By.ID, "f-destination")).select_by_value("console")
    Select(browser.find_element(By.ID, "f-state")).select_by_value("delivered")
    wait(
        browser,
        lambda d: (
            sorted(rules(d))
            == [
                "<img src=x onerror=alert(1)>",
                "Create/Modify Configmap With Private Credentials",
                "Terminal shell in container",
            ]
        ),
        "delivered to the console",
    )
    Select(browser.find_element(By.ID, "f-destination")).select_by_value("")
    Select(browser.find_element(By.ID, "f-state")).select_by_value("")
    wait(browser, lambda d: len(rules(d)) == 4, "the filters cleared")

    # Live: a new alert shows up without a reload.
    post(stack, token, h.falco_alert(rule="Launch Privileged Container", priority="Critical"))
    wait(browser, lambda d: rules(d)[:1] == ["Launch Privileged Container"], "the new alert", timeout=10)
    time.sleep(0.5)
    shot = SCREENSHOT if os.environ.get("EDGEGUARD_UPDATE_SCREENSHOT") == "1" else tmp_path / "ui.png"
    browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Sign out: the session ends and the data refuses again.
    browser.find_element(By.CSS_SELECTOR, "#logout button").click()
    wait(browser, lambda d: d.find_elements(By.ID, "login"), "the sign-in form again")
    status = browser.execute_async_script(
        "const done=arguments[0]; fetch('alerts',{credentials:'same-origin'}).then(r=>done(r.status))"
    )
    assert status == 401
    log = (stack.state_dir / "logs" / "alert-forwarder.log").read_text()
    assert token not in log
