"""kombu's filesystem transport, with atomic writes.

kombu 5.x writes a message by creating ``<time>_<uuid>.<queue>.msg`` and then writing its
body, while a consumer in another process takes a message by renaming the first file it
lists. The consumer can rename a file that is created but still empty, read ``b""``, and its
JSON decoding error stops the worker (seen in about one demo run in ten, with a worker that
retries while beat and the demo publish).

Here a message is written to a hidden temporary name (which no consumer looks at) and then
renamed into place, so a consumer only ever sees whole messages.

Taking a message, kombu lists and sorts the whole folder for every message it takes, so a
backlog of n messages costs O(n log n) per message. Here one listing serves many takes: the
names of a queue's messages are kept, oldest first, and taken one by one (a rename into a
hidden name in the same folder, which fails harmlessly when another consumer took it first);
the folder is listed again only when they are used up. ``install()`` makes
``filesystem://`` use it in this process; the Celery app (``tasks``) calls it, so every
producer, worker and beat of the embedded default uses it.
"""

from __future__ import annotations

import os
import uuid
from collections import deque
from queue import Empty
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

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

    def _get(self, queue: Any) -> Any:  # type: ignore[override]
        """Take the oldest message of ``queue`` (kombu's order: by name, which starts with
        the time it was written)."""
        names = self._listed().setdefault(queue, deque())
        if not names:
            suffix = f".{queue}.msg"
            names.extend(
                sorted(
                    name
                    for name in os.listdir(self.data_folder_in)
                    if name.endswith(suffix) and not name.startswith(".")
                )
            )
        while names:
            name = names.popleft()
            source = os.path.join(self.data_folder_in, name)
            taken = os.path.join(self.data_folder_in, f".{name}.{os.getpid()}.taken")
            try:
                os.rename(source, taken)
            except OSError:
                continue  # another consumer took it
            try:
                with open(taken, "rb") as message:
                    payload = message.read()
                if self.store_processed:
                    os.replace(taken, os.path.join(self.processed_folder, name))
                else:
                    os.remove(taken)
            except OSError as exc:
                raise ChannelError(f"Cannot read file {taken!r} from queue.") from exc
            return loads(bytes_to_str(payload))
        raise Empty()

    def _listed(self) -> dict[Any, deque[str]]:
        listed: dict[Any, deque[str]] | None = getattr(self, "_aicmo_listed", None)
        if listed is None:
            listed = {}
            self._aicmo_listed = listed
        return listed


class Transport(filesystem.Transport):
    Channel = Channel


def install() -> None:
    TRANSPORT_ALIASES[ALIAS] = TRANSPORT
