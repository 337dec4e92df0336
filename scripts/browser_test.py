#!/usr/bin/env python3
"""Browser tests of the console: headless Chromium (Debian's chromium and chromium-driver) driven
by Selenium against a real `tributary serve` and the built-in fake exchange (`tributary simulate`),
both on 127.0.0.1. Run through scripts/browser-test.

Each run (without API tokens, then with them):
  - creates a connector through the form, first with an error the API names (a ws connector with
    an http:// URL), which must appear next to that field and nowhere else;
  - starts it and sees rows arrive in the live table and the chart's trade count grow;
  - stops it;
and the API docs page renders every operation. Screenshots go to the artifacts directory; any
JavaScript error in the browser's console fails the run (HTTP 400 and 401 answers the test asks
for are expected, and Chromium logs those as network errors: only those are allowed).
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

TOKEN = "browser-test-token-0123456789"
EXPECTED_NETWORK = re.compile(r"/api/\S* - Failed to load resource: the server responded with a status of (400|401)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


class Failure(Exception):
    pass


class Run:
    def __init__(self, args, name, exchange_port, tokens):
        self.args = args
        self.name = name
        self.exchange_port = exchange_port
        self.tokens = tokens
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data = tempfile.mkdtemp(prefix="tributary-browser-")
        self.shots = []
        self.server = None
        self.driver = None

    def start_server(self):
        command = [
            self.args.binary, "serve", "--port", str(self.port), "--data-dir", self.data,
            "--allow-private-targets", "127.0.0.1/32",
        ]
        if self.tokens:
            command += ["--api-tokens", TOKEN]
        log = open(os.path.join(self.args.artifacts, f"{self.name}-server.log"), "w")
        self.server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_http(self.base + "/health")

    def start_browser(self):
        options = webdriver.ChromeOptions()
        for argument in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"]:
            options.add_argument(argument)
        if self.args.chromium:
            options.binary_location = self.args.chromium
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(self.args.chromedriver), options=options)
        self.driver.set_page_load_timeout(30)

    def stop(self):
        if self.driver:
            self.driver.quit()
        if self.server:
            self.server.terminate()
            try:
                self.server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.server.kill()
        shutil.rmtree(self.data, ignore_errors=True)

    # --- helpers ---

    def shot(self, label):
        path = os.path.join(self.args.artifacts, f"{self.name}-{len(self.shots) + 1:02d}-{label}.png")
        self.driver.save_screenshot(path)
        self.shots.append(path)

    def wait(self, condition, what, timeout=30):
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(lambda driver: condition())
        except TimeoutException:
            self.shot("failed")
            raise Failure(f"{self.name}: timed out waiting for {what}")

    def css(self, selector):
        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def visible(self, selector):
        elements = self.driver.find_elements(By.CSS_SELECTOR, selector)
        return elements[0] if elements and elements[0].is_displayed() else None

    def fill(self, selector, text):
        field = self.css(selector)
        field.clear()
        field.send_keys(text)

    def row(self, name):
        for row in self.driver.find_elements(By.CSS_SELECTOR, "#connectors-table tbody tr"):
            if row.find_element(By.CSS_SELECTOR, "td.name").text.startswith(name):
                return row
        return None

    def status(self, name):
        row = self.row(name)
        return row.find_element(By.CSS_SELECTOR, "td.status").text if row else None

    def check_console(self):
        problems = []
        for entry in self.driver.get_log("browser"):
            if entry["level"] != "SEVERE":
                continue
            if entry.get("source") == "network" and EXPECTED_NETWORK.search(entry["message"]):
                continue
            problems.append(entry["message"])
        if problems:
            raise Failure(f"{self.name}: JavaScript console errors:\n  " + "\n  ".join(problems))

    # --- the scenario ---

    def run(self):
        driver = self.driver
        driver.get(self.base + "/")
        if self.tokens:
            self.wait(lambda: self.visible("#token-dialog"), "the token prompt")
            self.shot("token-prompt")
            self.fill("#token-input", "not-the-token")
            self.css("#token-save").click()
            self.wait(lambda: "not accepted" in self.css("#token-error").text, "the wrong token refused")
            self.fill("#token-input", TOKEN)
            self.css("#token-save").click()
            self.wait(lambda: not self.visible("#token-dialog"), "the token accepted")
        self.wait(lambda: self.visible("#new-connector"), "the connectors view")
        self.check_console()

        # Create through the form: first an error the API names, shown at its field.
        name = f"browser-okx-{self.name}"
        self.css("#new-connector").click()
        self.wait(lambda: self.visible("#connector-dialog"), "the connector form")
        self.fill("#f-name", name)
        Select(self.css("#f-connector_type")).select_by_value("websocket")
        self.fill("#f-api_url", f"http://127.0.0.1:{self.exchange_port}/ws/v5/public")
        Select(self.css("#f-exchange")).select_by_value("okx")
        subscription = {"op": "subscribe", "args": [{"channel": "trades", "instId": "BTC-USDT"}, {"channel": "trades", "instId": "ETH-USDT"}]}
        self.fill("#f-subscription_message", json.dumps(subscription))
        self.css("#connector-save").click()
        self.wait(lambda: self.css("#e-api_url").text.strip() != "", "the api_url error next to its field")
        if self.css("#f-api_url").get_attribute("aria-invalid") != "true":
            raise Failure(f"{self.name}: the URL field is not marked invalid")
        others = [e.get_attribute("id") for e in driver.find_elements(By.CSS_SELECTOR, "#connector-form .field-error") if e.text.strip() and e.get_attribute("id") != "e-api_url"]
        if others:
            raise Failure(f"{self.name}: errors shown at other fields too: {others}")
        print(f"  {self.name}: api_url error shown at its field: {self.css('#e-api_url').text!r}")
        self.shot("validation-error")
        self.fill("#f-api_url", f"ws://127.0.0.1:{self.exchange_port}/ws/v5/public")
        self.css("#connector-save").click()
        self.wait(lambda: not self.visible("#connector-dialog"), "the form to close after saving")
        self.wait(lambda: self.row(name) is not None, "the new connector in the list")
        self.shot("created")

        # Start it: running, then rows in the live table and a growing chart.
        self.row(name).find_element(By.CSS_SELECTOR, "button[data-action=start]").click()
        self.wait(lambda: self.status(name) == "running", "status running", timeout=30)
        self.wait(lambda: (self.row(name).find_element(By.CSS_SELECTOR, "td.last").text or "—") != "—", "a last message time")
        self.shot("running")
        self.css("#tab-live").click()
        self.wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#live-table tbody tr")) >= 10, "10 rows in the live table")
        rows = len(driver.find_elements(By.CSS_SELECTOR, "#live-table tbody tr"))
        print(f"  {self.name}: live table has {rows} rows")
        self.shot("live")
        self.css("#tab-chart").click()
        canvas = lambda: self.css("#chart")
        self.wait(lambda: int(canvas().get_attribute("data-trades") or "0") > 0, "trades in the chart")
        first = int(canvas().get_attribute("data-trades"))
        self.wait(lambda: int(canvas().get_attribute("data-trades") or "0") >= first + 10, "the chart to grow by 10 trades")
        print(f"  {self.name}: chart grew from {first} to {canvas().get_attribute('data-trades')} trades")
        self.shot("chart")

        # The instances view: this server, alive, running the connector.
        self.css("#tab-instances").click()
        self.wait(lambda: "alive" in self.css("#instances-table tbody").text and "this one" in self.css("#instances-table tbody").text,
                  "this instance in the instances view")
        if name not in self.css("#instances-table tbody").text:
            raise Failure(f"{self.name}: the instances view does not list the running connector")
        self.shot("instances")

        # Stop it.
        self.css("#tab-connectors").click()
        self.wait(lambda: self.row(name) is not None, "the connectors view again")
        self.row(name).find_element(By.CSS_SELECTOR, "button[data-action=stop]").click()
        self.wait(lambda: self.status(name) == "stopped", "status stopped")
        self.shot("stopped")

        # Edit it: the form comes back filled in, and a rename is saved.
        self.row(name).find_element(By.CSS_SELECTOR, "button[data-action=edit]").click()
        self.wait(lambda: self.visible("#connector-dialog"), "the edit form")
        if self.css("#f-api_url").get_attribute("value") != f"ws://127.0.0.1:{self.exchange_port}/ws/v5/public":
            raise Failure(f"{self.name}: the edit form does not show the connector's URL")
        renamed = name + "-renamed"
        self.fill("#f-name", renamed)
        self.css("#connector-save").click()
        self.wait(lambda: not self.visible("#connector-dialog"), "the edit form to close")
        self.wait(lambda: self.row(renamed) is not None, "the renamed connector in the list")
        self.shot("edited")
        name = renamed

        # The API docs page.
        driver.get(self.base + "/docs")
        self.wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, "section.op")) >= 15, "the API docs")
        operations = len(driver.find_elements(By.CSS_SELECTOR, "#operations section.op"))
        print(f"  {self.name}: docs page shows {operations} operations")
        self.shot("docs")

        # Phone width and the dark theme (the system setting, emulated): the page itself must not
        # scroll sideways (wide tables scroll inside their frame).
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        driver.set_window_size(390, 844)
        driver.get(self.base + "/#connectors")
        self.wait(lambda: self.row(name) is not None, "the connectors view at phone width")
        overflow = driver.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        if overflow > 1:
            self.shot("phone-overflow")
            raise Failure(f"{self.name}: at 390 px the page scrolls sideways by {overflow} px")
        background = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        if background in ("rgb(247, 248, 250)", "rgb(255, 255, 255)"):
            raise Failure(f"{self.name}: the dark theme did not follow the system setting ({background})")
        self.shot("phone-dark")
        driver.set_window_size(1280, 900)
        self.check_console()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=".build/debug/tributary")
    parser.add_argument("--artifacts", default="artifacts/browser")
    parser.add_argument("--chromedriver", default=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "")
    args = parser.parse_args()
    shutil.rmtree(args.artifacts, ignore_errors=True)
    os.makedirs(args.artifacts)

    exchange_port = free_port()
    exchange_log = open(os.path.join(args.artifacts, "exchange.log"), "w")
    exchange = subprocess.Popen(
        [args.binary, "simulate", "--port", str(exchange_port), "--rate", "30", "--instruments", "BTC-USDT,ETH-USDT"],
        stdout=exchange_log, stderr=subprocess.STDOUT,
    )
    failures = []
    try:
        wait_http(f"http://127.0.0.1:{exchange_port}/stats")
        for name, tokens in [("open", False), ("tokens", True)]:
            print(f"browser-test: {name} ({'with' if tokens else 'without'} API tokens)")
            run = Run(args, name, exchange_port, tokens)
            try:
                run.start_server()
                run.start_browser()
                run.run()
                print(f"browser-test: {name}: PASS ({len(run.shots)} screenshots)")
            except Exception as error:  # a failed step, a crashed browser or server
                failures.append(f"{name}: {error}")
                print(f"browser-test: {name}: FAIL: {error}")
            finally:
                run.stop()
    finally:
        exchange.terminate()
        exchange.wait(timeout=20)
    print(f"browser-test: screenshots in {args.artifacts}/")
    if failures:
        print("browser-test: FAILED\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("browser-test: all passed")


if __name__ == "__main__":
    main()
