"""Frame sources: where pictures of the bin's drop zone come from.

``picamera`` drives the Pi camera (imported only when used); ``replay`` plays
image files, for laptops and tests. Both yield :class:`~.base.Frame`.
"""

from .base import Frame, FrameSource, SourceError

__all__ = ["Frame", "FrameSource", "SourceError"]
