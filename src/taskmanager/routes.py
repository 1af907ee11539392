"""Every domain router, listed once."""

from __future__ import annotations

from fastapi import APIRouter

DOMAIN_ROUTERS: list[APIRouter] = []
