"""The photograph every latency benchmark sends: one face in a 640x480 JPEG."""

from __future__ import annotations

import cv2
from skimage import data


def astronaut_640x480_jpeg() -> bytes:
    """scikit-image's astronaut photograph (bundled: no download) as a 640x480 JPEG, quality 90."""
    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    # The top 512x384 keeps the 4:3 aspect of 640x480 and the whole face.
    frame = cv2.resize(bgr[:384], (640, 480), interpolation=cv2.INTER_LINEAR)
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError("OpenCV could not encode the astronaut photograph as JPEG")
    return buf.tobytes()
