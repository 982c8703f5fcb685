"""The synthetic test pattern: colour bars, a moving subject and a burned-in clock, drawn with numpy.

Each frame is a pure function of its timestamp, so a test can redraw the frame it expects. The
clock shows the frame's producer timestamp (UTC, to the millisecond): a consumer that reads it back
can measure end-to-end latency by eye or by OCR-free comparison with `draw_frame`.
"""

from __future__ import annotations

import time

import numpy as np

# 5x7 bitmap glyphs: each string is one row, '#' is lit.
_GLYPHS = {
    "0": (" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "),
    "1": ("  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "),
    "2": (" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"),
    "3": ("#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "),
    "4": ("   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "),
    "5": ("#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "),
    "6": ("  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "),
    "7": ("#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "),
    "8": (" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "),
    "9": (" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "),
    ":": ("     ", "  #  ", "  #  ", "     ", "  #  ", "  #  ", "     "),
    ".": ("     ", "     ", "     ", "     ", "     ", " ##  ", " ##  "),
    "-": ("     ", "     ", "     ", "#####", "     ", "     ", "     "),
    " ": ("     ",) * 7,
}
_MASKS = {ch: np.array([[c == "#" for c in row] for row in rows], dtype=bool)
          for ch, rows in _GLYPHS.items()}

BAR_COLOURS = np.array([
    (192, 192, 192), (192, 192, 0), (0, 192, 192), (0, 192, 0),
    (192, 0, 192), (192, 0, 0), (0, 0, 192),
], dtype=np.uint8)
SUBJECT_COLOUR = (255, 128, 0)
TEXT_COLOUR = (255, 255, 255)
TEXT_BACKGROUND = (0, 0, 0)


def draw_text(frame: np.ndarray, text: str, x: int, y: int, scale: int = 3,
              colour=TEXT_COLOUR, background=TEXT_BACKGROUND) -> None:
    """Burn `text` (digits, ':', '.', '-', ' ') into an RGB frame in place, clipped to the frame."""
    height, width = frame.shape[:2]
    pad = scale
    box_w = len(text) * 6 * scale + pad
    box_h = 7 * scale + 2 * pad
    frame[max(0, y):max(0, min(height, y + box_h)), max(0, x):max(0, min(width, x + box_w))] = \
        background
    cx = x + pad
    for ch in text:
        mask = _MASKS.get(ch, _MASKS[" "])
        big = np.kron(mask, np.ones((scale, scale), dtype=bool))
        top, left = y + pad, cx
        bottom, right = top + big.shape[0], left + big.shape[1]
        if top >= 0 and left >= 0 and bottom <= height and right <= width:
            frame[top:bottom, left:right][big] = colour
        cx += 6 * scale


def clock_text(epoch_ms: int) -> str:
    """UTC wall-clock time of `epoch_ms` as HH:MM:SS.mmm."""
    seconds, millis = divmod(int(epoch_ms), 1000)
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}"


def subject_position(t_ms: int, width: int, height: int, size: int) -> tuple[int, int]:
    """Top-left corner of the moving subject: it bounces across the frame, ~4 s per crossing."""
    span_x = max(1, width - size)
    span_y = max(1, height - size)
    px = (t_ms * span_x // 4000) % (2 * span_x)
    py = (t_ms * span_y // 2700) % (2 * span_y)
    x = px if px < span_x else 2 * span_x - px
    y = py if py < span_y else 2 * span_y - py
    return int(x), int(y)


def draw_frame(width: int, height: int, pts_ms: int, epoch_ms: int, frame_index: int) -> np.ndarray:
    """The RGB test-pattern frame for one timestamp."""
    frame = np.empty((height, width, 3), dtype=np.uint8)
    bars = len(BAR_COLOURS)
    columns = (np.arange(width) * bars // max(1, width)).clip(0, bars - 1)
    frame[:] = BAR_COLOURS[columns][None, :, :]
    # A dark lower band so the subject and the text stand out.
    frame[height * 2 // 3:] //= 4
    size = max(8, min(width, height) // 6)
    x, y = subject_position(pts_ms, width, height, size)
    frame[y:y + size, x:x + size] = SUBJECT_COLOUR
    scale = max(1, min(width, height) // 160)
    draw_text(frame, clock_text(epoch_ms + pts_ms), 4, 4, scale)
    draw_text(frame, f"{frame_index:08d}", 4, 4 + 9 * scale + 4, scale)
    return frame
