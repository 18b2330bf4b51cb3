"""The action orchestration layer (AOL): models, queue, registry, executor and sweeper.

Import the modules you need (``aicmo.orchestration.queue``, ``.models``, ...); importing this
package loads nothing else, so it stays cheap for a process that only reads the version.
"""

from aicmo import __version__

__all__ = ["__version__"]
