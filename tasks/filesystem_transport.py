"""kombu's filesystem transport, with atomic writes.

kombu 5.x writes a message by creating ``<time>_<uuid>.<queue>.msg`` and then writing its
body, while a consumer in another process takes a message by renaming the first file it
lists. The consumer can rename a file that is created but still empty, read ``b""``, and its
JSON decoding error stops the worker (seen in about one demo run in ten, with a worker that
retries while beat and the demo publish).

Here a message is written to a hidden temporary name (which no consumer looks at) and then
renamed into place, so a consumer only ever sees whole messages. ``install()`` makes
``filesystem://`` use it in this process; the Celery app (``tasks``) calls it, so every
producer, worker and beat of the embedded default uses it.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

ALIAS = "filesystem"
TRANSPORT = f"{__name__}:Transport"


class Channel(filesystem.Channel):
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # A leading dot: kombu's consumer only takes "<stamp>_<uuid>.<queue>.msg".
        temporary = os.path.join(self.data_folder_out, f".{name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "wb") as out:
                out.write(str_to_bytes(dumps(payload)))
            os.replace(temporary, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel


def install() -> None:
    TRANSPORT_ALIASES[ALIAS] = TRANSPORT
