"""Placeholder: being written."""

from aiohttp import web

from devstack.state import StackState


def create_app(state: StackState) -> web.Application:
    return web.Application()
