"""Build the Celery app from aicmo's settings and register every task on it."""

from __future__ import annotations

import gc
import sys
from datetime import datetime

from celery import Celery
from celery.signals import after_setup_logger, worker_init, worker_process_init

import beat_schedule
from aicmo.config import get_settings
from aicmo.logging import configure_logging
from aicmo.orchestration.dispatch import install_dispatcher
from aicmo.orchestration.registry import registry
from tasks import filesystem_transport
from tasks.actions import load_engine, register_action_tasks
from tasks.beat_tasks import register_beat_tasks
from tasks.config import celery_config
from tasks.dispatcher import CeleryDispatcher
from tasks.maintenance import register_maintenance_tasks

settings = get_settings()
# kombu's own file transport can hand a consumer a half-written message (see the module).
filesystem_transport.install()
registry.autoload()


class AicmoCelery(Celery):
    def now(self) -> datetime:
        # Celery turns every countdown (a retry's backoff, a message due within the horizon)
        # into an absolute ETA with this clock. The host's would be wrong on a host whose
        # clock is off: five minutes ahead, its ETAs made workers on right clocks hold the
        # messages five minutes. So the database's clock, as for every other time two
        # processes compare (tests/integration/test_claims_and_clocks.py). Only where the
        # database code is loaded already: a worker's main process holds none (its children
        # send the retries), and it must not load it for a clock reading.
        db = sys.modules.get("aicmo.db")
        if db is None:
            return super().now()
        return db.db_clock_now().astimezone(self.timezone)


app = AicmoCelery("aicmo")
app.config_from_object(celery_config(settings))
app.conf.beat_schedule = beat_schedule.build_schedule(settings)

action_tasks = register_action_tasks(app)
register_maintenance_tasks(app)
register_beat_tasks(app)
install_dispatcher(CeleryDispatcher(app))


@worker_init.connect
def _freeze_imports(**_: object) -> None:
    # Everything imported so far lives as long as the process: keep the cyclic collector
    # from walking it over and over (and keep its pages shared with the forked children).
    gc.freeze()


@worker_process_init.connect
def _fresh_connections_in_child(**_: object) -> None:
    # A forked pool child inherits its parent's pooled connections; never share them.
    if "aicmo.db" in sys.modules:
        sys.modules["aicmo.db"].dispose_engines()
    # The engine is the child's alone (the main process never runs an action): import it at
    # the child's start rather than in its first action, and freeze it as the parent does.
    load_engine()
    gc.freeze()


@after_setup_logger.connect
def _aicmo_logging(**_: object) -> None:
    configure_logging(get_settings())
