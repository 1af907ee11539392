"""Login throttling per account, built so that an attacker cannot lock the real user out.

Beside the per-address limit every auth route has (``TASKMANAGER_RATE_LIMIT_AUTH``, in the
rate-limit middleware), each login attempt counts against:

- the account *and* the address (``TASKMANAGER_RATE_LIMIT_LOGIN_ADDRESS``, e.g.
  ``5/minute;20/hour``): one address guessing one account. Someone else's guesses from
  other addresses never use up this quota, and a successful login resets it;
- the account from any address that has not logged in to it successfully in the last
  30 days (``TASKMANAGER_RATE_LIMIT_LOGIN_ACCOUNT``, e.g. ``20/minute;100/hour;300/day``):
  the ceiling for guesses spread over many addresses (a botnet, rotating proxies). Its
  tiers are the back-off: past 20 in a minute the wait is the minute, past 100 the hour,
  past 300 the day. An address the user logged in from before is not held to it, so the
  real user keeps their way in while the account is under attack.

The account is named by the login as typed (lower-cased), before any lookup, so an unknown
account is throttled exactly like a real one (no enumeration through 429s); counters are
keyed by a digest, so no username or email is written to Redis.
"""

from __future__ import annotations

from limits import RateLimitItem, RateLimitItemPerDay, parse_many

from taskmanager.kit.config import Settings
from taskmanager.kit.errors import RateLimited
from taskmanager.kit.security import digest
from taskmanager.kit.throttle import Counters, Window

# How long a successful login vouches for its address.
KNOWN_ADDRESS_DAYS = 30
_KNOWN = RateLimitItemPerDay(1_000_000, KNOWN_ADDRESS_DAYS)


class LoginThrottle:
    """Counts login attempts per account-and-address and per account."""

    def __init__(self, counters: Counters, settings: Settings) -> None:
        self.counters = counters
        self.per_address: list[RateLimitItem] = parse_many(settings.rate_limit_login_address)
        self.per_account: list[RateLimitItem] = parse_many(settings.rate_limit_login_account)

    @staticmethod
    def _keys(login: str, address: str) -> tuple[str, str]:
        account = digest("login:" + login.lower())[:32]
        return f"login:{account}", f"login:{account}:{address}"

    async def attempt(self, login: str, address: str) -> None:
        """Count an attempt; raise RateLimited (with Retry-After) when a limit is passed."""
        account_key, pair_key = self._keys(login, address)
        exceeded: list[Window] = []
        for item in self.per_address:
            window = await self.counters.hit(item, pair_key)
            if window.exceeded:
                exceeded.append(window)
        if not exceeded and not await self.counters.count(_KNOWN, pair_key):
            for item in self.per_account:
                window = await self.counters.hit(item, account_key)
                if window.exceeded:
                    exceeded.append(window)
        if exceeded:
            wait = max(window.reset_seconds for window in exceeded)
            raise RateLimited(
                f"Too many login attempts for this account; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )

    async def succeeded(self, login: str, address: str) -> None:
        """A correct password: reset this address's count and vouch for it from now on."""
        _, pair_key = self._keys(login, address)
        for item in self.per_address:
            await self.counters.clear(item, pair_key)
        await self.counters.hit(_KNOWN, pair_key)
