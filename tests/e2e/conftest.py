import pytest

from tests.e2e.gateway import Echo, Gateway, reserve_port


@pytest.fixture
def echo_factory():
    started: list[Echo] = []

    def make(name: str, *args: str) -> Echo:
        e = Echo(name, *args)
        started.append(e)
        return e

    yield make
    for e in started:
        e.stop()


@pytest.fixture
def gateway_factory():
    started: list[Gateway] = []

    def make(config, workers: int = 2, start: bool = True, **env) -> Gateway:
        gw = Gateway(config, workers=workers, **env)
        started.append(gw)
        return gw.start() if start else gw

    yield make
    for gw in started:
        gw.stop()


@pytest.fixture
def port():
    """The gateway's listener port, reserved for the whole test (see reserve_port)."""
    number, holder = reserve_port()
    yield number
    holder.close()
