"""The driver: the only Python code that talks to WhatsApp Web.

It owns one Chromium (a persistent context on the location's profile directory) through
Playwright, installs the init script (WPPConfig, the wa-js bundle when configured, and
bridge.js), relays the page's events to Python and runs commands one at a time, each with
a timeout. In tests the page is the WhatsApp Web double, which defines WPP itself: the
only difference is configuration (WHATSAPP_WEB_URL, WAJS_INJECT).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext, Page, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

from whatsapp_common.logs import get_logger

from .config import Settings

log = get_logger(__name__)

BRIDGE_JS = (Path(__file__).parent / "bridge.js").read_text()
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # localStorage (where WhatsApp keeps part of its login) is otherwise committed to disk
    # seconds later, so a backup taken right after linking could miss it.
    "--enable-aggressive-domstorage-flushing",
    # Chromium keeps a spare renderer ready for the next navigation; the pod never makes
    # one after WhatsApp Web has loaded (benchmarks/session_pod_levers.py: one renderer less).
    "--disable-features=SpareRendererForSitePerProcess",
]
# Chromium reads only the last of each of these switches: lists given twice are merged.
LIST_SWITCHES = ("--disable-features=", "--enable-features=")
# Playwright 1.65.2 passes both itself (chromiumSwitches in its driver's coreBundle.js); a
# second one of ours would replace its list, so these are left out of its defaults
# (ignore_default_args) and merged into ours. tests/test_session_pod_lifecycle.py reads the
# browser's command line: a Playwright that changes them fails it.
PLAYWRIGHT_FEATURE_SWITCHES = (
    "--disable-features=AvoidUnnecessaryBeforeUnloadCheckSync,DestroyProfileOnBrowserClose,"
    "HttpsUpgrades,HttpsFirstBalancedModeAutoEnable,LensOverlay,MediaRouter,PaintHolding,"
    "ThirdPartyStoragePartitioning,AvoidCorsURLLoaderRestartOnRedirect,TcpPortRandomizationWin,"
    "OptimizationHints,NetworkTimeServiceQuerying,AimEnabled,PreconnectToSearch,"
    "msForceBrowserSignIn,msEdgeUpdateLaunchServicesPreferredVersion",
    "--enable-features=CDPScreenshotNewSurface,SkipListAccountsWithoutGaiaCookies",
)


def chromium_args(extra: tuple[str, ...] | list[str]) -> list[str]:
    """Playwright's feature lists, the pod's flags, then CHROMIUM_EXTRA_ARGS; the feature
    lists of all three merged, one switch each."""
    args: list[str] = []
    features: dict[str, list[str]] = {}
    for arg in [*PLAYWRIGHT_FEATURE_SWITCHES, *CHROMIUM_ARGS, *extra]:
        switch = next((s for s in LIST_SWITCHES if arg.startswith(s)), None)
        if switch is None:
            args.append(arg)
            continue
        if switch not in features:
            features[switch] = []
            args.append(switch)  # its place; the merged list is filled in below
        merged = features[switch]
        merged += [f for f in arg[len(switch) :].split(",") if f and f not in merged]
    return [arg + ",".join(features[arg]) if arg in features else arg for arg in args]


LAUNCH_SLACK_SECONDS = 15


class DriverError(RuntimeError):
    """A WhatsApp Web call failed, timed out, or there is no page to call."""


@dataclass(frozen=True)
class BridgeMessage:
    """One report from the page: `attached` after each load, or a WPP event name."""

    type: str
    data: Any
    snapshot: dict[str, Any] | None


async def chrome_user_agent(chromium_path: str) -> str:
    """A desktop Chrome user agent for this Chromium's version.

    Headless Chromium says `HeadlessChrome`, and WhatsApp Web answers that with an
    "update Chrome" page instead of the app.
    """
    proc = await asyncio.create_subprocess_exec(
        chromium_path, "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    match = re.search(rb"(\d+)\.\d+\.\d+\.\d+", out)
    if not match:
        raise DriverError(f"cannot read the version of {chromium_path}: {out[:200]!r}")
    major = match.group(1).decode()
    return (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"Chrome/{major}.0.0.0 Safari/537.36"
    )


def init_script(settings: Settings) -> str:
    """WPPConfig first, then the wa-js bundle (production) and the bridge."""
    config = {
        "deviceName": settings.device_name,
        "disableGoogleAnalytics": True,
        "poweredBy": "whatsapp-sessions",
    }
    parts = [f"window.WPPConfig = {json.dumps(config)};"]
    if settings.inject_wajs:
        parts.append(settings.wajs_bundle.read_text())
    parts.append(BRIDGE_JS)
    return "\n;\n".join(parts)


class WhatsAppWebDriver:
    def __init__(
        self,
        settings: Settings,
        on_message: Callable[[BridgeMessage], None],
        on_dead: Callable[[str], None],
    ) -> None:
        self._settings = settings
        self._on_message = on_message
        self._on_dead = on_dead
        self._script = init_script(settings)
        self._lock = asyncio.Lock()
        self._playwright: Playwright | None = None
        self._context: BrowserContext | None = None
        self._page: Page | None = None
        self._closing = False

    @property
    def running(self) -> bool:
        return self._page is not None

    async def launch(self) -> None:
        """Starts Chromium on the profile and opens WhatsApp Web; `attached` follows. A launch
        that does not finish within LOAD_TIMEOUT_SECONDS (+15 s to start the browser) fails:
        Playwright can lose track of a browser killed mid-launch and never answer."""
        limit = self._settings.load_timeout + LAUNCH_SLACK_SECONDS
        try:
            await asyncio.wait_for(self._launch(), limit)
        except TimeoutError:
            raise DriverError(f"browser launch did not finish within {limit:g}s") from None
        except PlaywrightError as exc:
            raise DriverError(f"browser launch failed: {_first_line(exc.message)}") from None

    async def _launch(self) -> None:
        settings = self._settings
        settings.profile_dir.mkdir(parents=True, exist_ok=True)
        self._closing = False
        user_agent = await chrome_user_agent(settings.chromium_path)
        # Playwright starts its node driver with this process's environment; the pod runs no
        # other node program.
        os.environ["NODE_OPTIONS"] = settings.driver_node_options
        self._playwright = await async_playwright().start()
        context = await self._playwright.chromium.launch_persistent_context(
            settings.profile_dir,
            executable_path=settings.chromium_path,
            headless=True,
            args=chromium_args(settings.chromium_memory_args + settings.chromium_extra_args),
            ignore_default_args=list(PLAYWRIGHT_FEATURE_SWITCHES),
            user_agent=user_agent,
            # As wa-js's tools and WPPConnect do: WhatsApp Web's service worker serves a cached
            # app and holds caches we never back up.
            service_workers="block",
        )
        self._context = context
        context.on("close", lambda _: self._report_dead("browser closed"))
        await context.expose_function("__waBridge", self._relay)
        await context.add_init_script(script=self._script)
        page = context.pages[0] if context.pages else await context.new_page()
        page.on("crash", lambda _: self._report_dead("page crashed"))
        page.on("close", lambda _: self._report_dead("page closed"))
        self._page = page
        await page.goto(
            settings.whatsapp_web_url,
            wait_until="domcontentloaded",
            timeout=settings.load_timeout * 1000,
        )
        log.info("browser launched", url=settings.whatsapp_web_url)

    async def close(self) -> None:
        """Closes the browser cleanly; kills it when it does not close in time."""
        self._closing = True
        context, playwright = self._context, self._playwright
        self._context = self._page = self._playwright = None
        if context is not None:
            try:
                await asyncio.wait_for(context.close(), timeout=10)
            except (TimeoutError, PlaywrightError) as exc:
                log.warning("browser did not close cleanly, killing it", error=str(exc))
        if playwright is not None:
            try:
                await asyncio.wait_for(playwright.stop(), 10)
            except (TimeoutError, PlaywrightError) as exc:
                log.warning("Playwright did not stop cleanly", error=str(exc) or "timeout")

    async def call(self, command: str, *args: Any) -> Any:
        """Runs one bridge command; operations of the session run one at a time."""
        async with self._lock:
            return await self._evaluate(command, args, self._settings.call_timeout)

    async def reload_qr(self) -> None:
        """Clicks the QR's reload button: current WhatsApp Web has no Cmd.refreshQR (wa-js
        conn.refreshQR fails), and WPPConnect gets a new code the same way."""
        async with self._lock:
            page = self._page
            if page is None:
                raise DriverError("the browser is not running")
            try:
                await page.click(self._settings.qr_reload_selector, timeout=5000)
            except PlaywrightError as exc:
                raise DriverError(_first_line(exc.message)) from None

    async def ping(self) -> bool:
        """Does the page still answer within the health timeout? Not queued behind commands."""
        try:
            await self._evaluate("ping", (), self._settings.health_timeout)
        except DriverError:
            return False
        return True

    async def _evaluate(self, command: str, args: tuple[Any, ...], seconds: float) -> Any:
        page = self._page
        if page is None:
            raise DriverError("the browser is not running")
        try:
            return await asyncio.wait_for(
                page.evaluate(
                    "([name, args]) => window.__waCommands[name](...args)", [command, list(args)]
                ),
                seconds,
            )
        except TimeoutError:
            raise DriverError(f"{command} timed out after {seconds:g}s") from None
        except PlaywrightError as exc:
            raise DriverError(_first_line(exc.message)) from None

    def _relay(self, payload: dict[str, Any]) -> None:
        # A page being closed (a planned relaunch, or after its crash) still reports what it
        # sees, but its state is no longer the session's: only the next page's counts.
        snapshot = None if self._closing else payload.get("snapshot")
        self._on_message(BridgeMessage(payload["type"], payload.get("data"), snapshot))

    def _report_dead(self, reason: str) -> None:
        if not self._closing:
            self._closing = True
            self._on_dead(reason)


def _first_line(message: str) -> str:
    """Playwright errors carry a call log; the first line says what went wrong."""
    return message.strip().splitlines()[0] if message.strip() else "unknown browser error"
