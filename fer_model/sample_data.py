"""Synthetic faces written in the real source formats, so demos and tests run through the real readers.

`write_sample_data(out_dir, n=..., seed=...)` draws faces with OpenCV and writes
- `fer2013.csv`: FER2013's `emotion,pixels,Usage` CSV, 48x48 gray faces, emotion only;
- `rafdb/`: RAF-DB's basic layout, 100x100 colour JPEGs with emotion, gender, race and age.

Every task leaves a visible, learnable cue, blurred by random pose, lighting and noise:
emotion in the mouth, brows and eyes; gender in hair length, brow weight and stubble; race in skin
tone, eye shape, nose and lips; age in head shape, wrinkles and hair colour.

On purpose, the CSV holds four malformed rows (too few pixels, a non-numeric pixel, an unknown
emotion code, an unknown Usage) and RAF-DB one corrupt JPEG (an extra `train_` entry), so a
prepared demo dataset shows rejects with their reasons in its manifest.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fer_model.errors import ConfigError
from fer_model.tasks import AGE, EMOTION, GENDER, RACE

logger = logging.getLogger(__name__)

_CANVAS = 200  # faces are drawn at 200 px and downscaled, which anti-aliases every stroke
RAF_SIZE = 100
FER_SIZE = 48
#: Malformed FER2013 rows written after the good ones: (emotion, pixels, Usage) -> reason shown.
_BAD_ROWS = (
    ("3", " ".join(["128"] * (FER_SIZE * FER_SIZE - 1)), "Training"),  # one pixel short
    ("4", " ".join(["128"] * (FER_SIZE * FER_SIZE - 1) + ["x1"]), "Training"),  # non-numeric pixel
    ("9", " ".join(["128"] * (FER_SIZE * FER_SIZE)), "Training"),  # unknown emotion code
    ("6", " ".join(["128"] * (FER_SIZE * FER_SIZE)), "Holdout"),  # unknown Usage
)
_FER_CODES = {
    EMOTION.index(n): c for c, n in enumerate(("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"))
}
_USAGES = ("Training", "PublicTest", "PrivateTest")

# Per emotion: brow inner dy, outer dy, arch, inner dx (toward centre is negative), eye opening
# factor, mouth shape. Positive dy moves down. Values are at full intensity, canvas pixels.
_EXPRESSIONS: dict[str, tuple[float, float, float, float, float, str]] = {
    "surprise": (-15, -12, 6, 0, 1.5, "round"),
    "fear": (-13, -4, 0, -5, 1.4, "open"),
    "disgust": (6, 1, 1, -3, 0.75, "sneer"),
    "happy": (-2, -2, 3, 0, 0.7, "smile"),
    "sad": (-11, 6, -2, -3, 0.85, "frown"),
    "angry": (11, -4, -1, -6, 0.65, "tight"),
    "neutral": (0, 0, 3, 0, 1.0, "line"),
}
# Skin colour (BGR) per race, before per-face jitter.
_SKIN = {"caucasian": (172, 192, 228), "african_american": (58, 82, 118), "asian": (138, 182, 218)}
_HAIR_DARK = ((25, 25, 30), (20, 30, 45), (35, 45, 60))
_HAIR_LIGHT = ((60, 110, 160), (90, 150, 200), (40, 70, 110))


@dataclass(frozen=True)
class _Face:
    """The labels (class names) of one synthetic face."""

    emotion: str
    gender: str
    race: str
    age: str


def _bezier(p0: tuple[float, float], p1: tuple[float, float], p2: tuple[float, float], n: int = 16) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    pts = (1 - t) ** 2 * np.array(p0) + 2 * (1 - t) * t * np.array(p1) + t**2 * np.array(p2)
    return np.round(pts * 4).astype(np.int32)  # 2 fractional bits for cv2 shift=2


def _poly(img: np.ndarray, pts: np.ndarray, color: Any, thickness: int) -> None:
    cv2.polylines(img, [pts], False, color, thickness, cv2.LINE_AA, shift=2)


def _shade(color: Any, factor: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in color)  # type: ignore[return-value]


def _u(rng: np.random.Generator, a: float, b: float) -> float:
    return float(rng.uniform(a, b))


@dataclass(frozen=True)
class _Head:
    """One face's head on the canvas: its labels, placement and colours, and the pixel grids."""

    face: _Face
    age: int  # index into AGE
    cx: float
    cy: float
    ax: float  # half width
    ay: float  # half height
    skin: np.ndarray
    hair: np.ndarray
    xx: np.ndarray
    yy: np.ndarray
    r2: np.ndarray  # squared elliptic distance from the head centre: <= 1 inside the head

    @property
    def child(self) -> bool:
        return self.age == 0

    @property
    def old(self) -> bool:
        return self.age == 4

    @property
    def female(self) -> bool:
        return self.face.gender == "female"

    @property
    def male(self) -> bool:
        return self.face.gender == "male"

    @property
    def wrinkle(self) -> tuple[int, int, int]:
        return _shade(self.skin, 0.72)


def _background_and_head(face: _Face, rng: np.random.Generator) -> tuple[np.ndarray, _Head]:
    """A lit background gradient, and where the head goes with which skin and hair colours."""
    s = _CANVAS
    age = AGE.index(face.age)
    bg = np.array([_u(rng, 40, 220), _u(rng, 40, 220), _u(rng, 40, 220)])
    img = np.empty((s, s, 3), np.float32)
    img[:] = bg * np.linspace(0.75, 1.15, s)[:, None, None]  # a lit gradient, not a flat colour
    cx, cy = s / 2 + _u(rng, -3, 3), s * 0.52 + _u(rng, -3, 3)
    ax = 80 * (1.04 if age == 0 else 1.0) * _u(rng, 0.95, 1.05)
    ay = (88 if age == 0 else 98) * _u(rng, 0.95, 1.05)
    skin = np.array(_SKIN[face.race]) * _u(rng, 0.88, 1.1)
    if age == 4:
        skin = skin * 0.93 + 12  # paler, flatter skin
    grey = _u(rng, 0.5, 0.95) if age == 4 else _u(rng, 0.1, 0.5) if age == 3 else 0.0  # how grey the hair is
    base = _HAIR_LIGHT if face.race == "caucasian" and rng.random() < 0.5 else _HAIR_DARK
    hair = np.array(base[rng.integers(len(base))], float) * (1 - grey) + np.array([200, 200, 205]) * grey
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    r2 = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2
    return img, _Head(face=face, age=age, cx=cx, cy=cy, ax=ax, ay=ay, skin=skin, hair=hair, xx=xx, yy=yy, r2=r2)


def _paint_head(img: np.ndarray, h: _Head, rng: np.random.Generator) -> None:
    """Hair behind the head, neck and shirt, ears, the shaded head, the hair cap and stubble."""
    s, cx, cy, ax, ay, xx, yy, r2 = _CANVAS, h.cx, h.cy, h.ax, h.ay, h.xx, h.yy, h.r2
    head = r2 <= 1.0
    # Long hair (female), jaw-length (unsure), none behind the head (male).
    hair_len = 0.0 if h.male else (_u(rng, 0.9, 1.4) if h.female else _u(rng, 0.2, 0.5))
    if hair_len and not h.child:
        behind = (np.abs(xx - cx) <= ax + 16) & (yy >= cy - 0.4 * ay) & (yy <= cy + hair_len * ay)
        img[behind | (r2 <= 1.25)] = h.hair
    # Neck and shirt, then the head with a radial shading that makes it look round.
    img[(np.abs(xx - cx) < 0.42 * ax) & (yy > cy + 0.6 * ay)] = h.skin * 0.82
    img[(yy > cy + 0.95 * ay) & (((xx - cx) / (1.6 * ax)) ** 2 + ((yy - s * 1.25) / 60) ** 2 < 1)] = np.array(
        [_u(rng, 30, 200), _u(rng, 30, 200), _u(rng, 30, 200)]
    )
    for side in (-1, 1):  # ears
        ear = (int(cx + side * ax * 0.97), int(cy - 0.05 * ay))
        cv2.ellipse(img, ear, (9, 17), 0, 0, 360, _shade(h.skin, 0.85), -1)
    img[head] = h.skin * (1.08 - 0.3 * r2[head, None])
    # Hair cap above a curved hairline; balding men keep the sides only.
    line0 = cy - (0.95 if (h.old and h.male and rng.random() < 0.6) else 0.62 + _u(rng, -0.04, 0.04)) * ay
    hairline = line0 + 0.45 * ay * ((xx - cx) / ax) ** 2
    cap = (r2 <= 1.12) & (yy < hairline) & (yy < cy)
    if h.child:
        cap &= rng.random((s, s)) < 0.5  # sparse baby hair
    img[cap] = h.hair * _u(rng, 0.9, 1.1)
    if h.male and h.age >= 2 and rng.random() < 0.5:  # stubble on the lower face
        stubble = head & (yy > cy + 0.35 * ay) & (rng.random((s, s)) < 0.5)
        img[stubble] *= 0.78


def _paint_eyes(
    img: np.ndarray, h: _Head, rng: np.random.Generator, k: float
) -> tuple[list[tuple[float, float]], float]:
    """Eyes, brows (shaped by the expression at intensity `k`) and eye wrinkles; returns the eye
    centres and their height on the canvas."""
    b_in, b_out, arch, b_dx, eye_open, _ = _EXPRESSIONS[h.face.emotion]
    b_in, b_out, arch, b_dx = b_in * k, b_out * k, 3 + (arch - 3) * k, b_dx * k
    eye_open = 1 + (eye_open - 1) * k
    ey = h.cy - (0.05 if h.child else 0.18) * h.ay + _u(rng, -2, 2)
    ew = (19 if h.child else 16) * _u(rng, 0.93, 1.07)
    eh = ew * 0.5 * eye_open * (0.7 if h.face.race == "asian" else 1.0)
    brow_col = h.hair * 0.6 + np.array(_shade(h.skin, 0.3)) * 0.4
    centres = []
    for side in (-1, 1):
        ex = h.cx + side * 0.42 * h.ax
        centres.append((ex, ey))
        # A shadowed socket around a light eye white and a dark iris: the dark-in-light pattern
        # Haar eye cascades key on.
        cv2.ellipse(img, (int(ex), int(ey)), (int(ew * 1.35), int(eh * 1.5 + 5)), 0, 0, 360, _shade(h.skin, 0.8), -1)
        cv2.ellipse(img, (int(ex), int(ey)), (int(ew), max(2, int(eh))), 0, 0, 360, (235, 238, 240), -1, cv2.LINE_AA)
        iris = max(3, int(min(eh, ew * 0.55)))
        iris_col = (120, 90, 40) if h.face.race == "caucasian" and rng.random() < 0.3 else (40, 50, 70)
        cv2.circle(img, (int(ex), int(ey)), iris, iris_col, -1, cv2.LINE_AA)
        cv2.circle(img, (int(ex), int(ey)), max(2, iris // 2), (10, 10, 10), -1, cv2.LINE_AA)
        cv2.circle(img, (int(ex - 2), int(ey - 2)), 2, (250, 250, 250), -1, cv2.LINE_AA)
        lid = 4 if h.female else 2
        cv2.ellipse(img, (int(ex), int(ey)), (int(ew), max(2, int(eh))), 0, 180, 360, (20, 20, 25), lid, cv2.LINE_AA)
        # Brow: inner end near the nose, outer end above the eye's outer corner.
        by = ey - eh - 14 - (4 if h.child else 0)
        inner = (h.cx + side * (0.16 * h.ax + b_dx), by + b_in)
        outer = (h.cx + side * 0.62 * h.ax, by + b_out)
        mid = ((inner[0] + outer[0]) / 2, (inner[1] + outer[1]) / 2 - arch)
        _poly(img, _bezier(inner, mid, outer), brow_col, 7 if h.male else 4)
        if h.age >= 3:  # crow's feet and bags under the eyes
            for j in range(2 if h.age == 3 else 4):
                y0 = ey - 4 + 5 * j
                _poly(
                    img,
                    _bezier((ex + side * (ew + 4), y0), (ex + side * (ew + 9), y0), (ex + side * (ew + 14), y0 + 3)),
                    h.wrinkle,
                    1,
                )
            bag = _bezier((ex - ew * 0.8, ey + eh + 6), (ex, ey + eh + 11), (ex + ew * 0.8, ey + eh + 6))
            _poly(img, bag, h.wrinkle, 1)
    return centres, ey


def _paint_nose(img: np.ndarray, h: _Head, ey: float) -> tuple[float, float]:
    """The nose, and the disgust and age lines around it; returns (nose tip y, nose width)."""
    cx, wrinkle = h.cx, h.wrinkle
    # Nose: a bridge shadow and nostrils, wider for african_american faces, smaller for children.
    nose_w = (14 if h.child else 17) * (1.3 if h.face.race == "african_american" else 1.0)
    ny = h.cy + (0.22 if h.child else 0.2) * h.ay
    _poly(img, _bezier((cx - 4, ey + 6), (cx - 7, ny - 12), (cx - 3, ny)), _shade(h.skin, 0.75), 2)
    for side in (-1, 1):
        cv2.ellipse(
            img, (int(cx + side * nose_w * 0.45), int(ny)), (5, 3), 0, 0, 360, _shade(h.skin, 0.45), -1, cv2.LINE_AA
        )
    if h.face.emotion == "disgust":  # wrinkled nose bridge
        for j in range(3):
            _poly(img, _bezier((cx - 8, ey + 10 + 4 * j), (cx, ey + 8 + 4 * j), (cx + 8, ey + 10 + 4 * j)), wrinkle, 1)
    if h.age >= 3:  # forehead lines
        for j in range(2 if h.age == 3 else 4):
            fy = ey - 32 - 5 * j
            _poly(img, _bezier((cx - 0.3 * h.ax, fy + 2), (cx, fy - 2), (cx + 0.3 * h.ax, fy + 2)), wrinkle,
                  1 + (h.age == 4))
    return ny, nose_w


def _paint_mouth(img: np.ndarray, h: _Head, rng: np.random.Generator, k: float) -> tuple[float, float]:
    """The expression's mouth at intensity `k`; returns (mouth y, mouth half width)."""
    cx, skin = h.cx, h.skin
    mouth = _EXPRESSIONS[h.face.emotion][5]
    my = h.cy + (0.48 if h.child else 0.5) * h.ay
    mw = (0.24 if h.child else 0.31) * h.ax * _u(rng, 0.92, 1.08)
    lip = np.array(skin) * np.array([0.55, 0.55, 0.95]) if h.female else np.array(skin) * np.array([0.6, 0.6, 0.8])
    lip_t = (5 if h.female else 3) + (h.face.race == "african_american")
    cavity = (35, 25, 45)
    xs = np.linspace(-1, 1, 17)

    def curve(depth: float, width: float = 1.0, lift: float = 0.0) -> np.ndarray:
        pts = np.stack([cx + xs * mw * width, my + depth * (1 - xs**2) - lift], axis=1)
        return np.round(pts * 4).astype(np.int32)

    if mouth == "smile":
        if rng.random() < 0.5:  # open smile showing teeth
            upper, lower = curve(3 * k, 1.15), curve(15 * k, 1.15)
            cv2.fillPoly(img, [np.concatenate([upper, lower[::-1]])], (235, 235, 235), cv2.LINE_AA, shift=2)
            _poly(img, lower, lip, lip_t)
        else:
            _poly(img, curve(11 * k, 1.15, 4 * k), lip, lip_t)
    elif mouth == "frown":
        _poly(img, curve(-9 * k, 0.9), lip, lip_t)
    elif mouth == "round":
        cv2.ellipse(
            img, (int(cx), int(my)), (int(mw * 0.45), int(mw * (0.35 + 0.5 * k))), 0, 0, 360, lip, -1, cv2.LINE_AA
        )
        cv2.ellipse(
            img, (int(cx), int(my)), (int(mw * 0.32), int(mw * (0.25 + 0.42 * k))), 0, 0, 360, cavity, -1, cv2.LINE_AA
        )
    elif mouth == "open":
        upper, lower = curve(-2 * k, 1.1), curve(12 * k, 1.1)
        cv2.fillPoly(img, [np.concatenate([upper, lower[::-1]])], cavity, cv2.LINE_AA, shift=2)
        _poly(img, curve(-1 * k, 0.8) + np.array([0, 8]), (225, 225, 225), 3)  # lower teeth
        _poly(img, upper, lip, lip_t)
        _poly(img, lower, lip, lip_t)
    elif mouth == "tight":
        _poly(img, curve(-2.5 * k, 0.85), _shade(lip, 0.8), lip_t + 1)
    elif mouth == "sneer":
        side = 1 if rng.random() < 0.5 else -1
        raise_y = 10 * k * np.clip(side * xs, 0, None) ** 1.2  # one side of the upper lip lifts
        upper = np.stack([cx + xs * mw, my - raise_y], axis=1)
        lower = np.stack([cx + xs * mw, my + 2 * k * (1 - xs**2)], axis=1)
        cv2.fillPoly(
            img, [np.round(np.concatenate([upper, lower[::-1]]) * 4).astype(np.int32)], cavity, cv2.LINE_AA, shift=2
        )
        _poly(img, np.round(upper * 4).astype(np.int32), lip, lip_t)
    else:  # neutral
        _poly(img, curve(_u(rng, -1.5, 1.5)), lip, lip_t)
    return my, mw


def _paint_folds(img: np.ndarray, h: _Head, *, ny: float, nose_w: float, my: float, mw: float) -> None:
    """Nasolabial folds from the nostrils to beyond the mouth corners (older faces)."""
    for side in (-1, 1):
        _poly(
            img,
            _bezier(
                (h.cx + side * nose_w * 0.8, ny), (h.cx + side * (mw + 6), my - 10), (h.cx + side * (mw + 4), my + 6)
            ),
            h.wrinkle,
            1 + (h.age == 4),
        )


def _draw_face(face: _Face, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 200x200 BGR face and its 5 landmarks (eyes, nose tip, mouth corners) in canvas pixels.

    The steps draw from `rng` in a fixed order, so a seed always gives the same face.
    """
    img, head = _background_and_head(face, rng)
    _paint_head(img, head, rng)
    # Expression, scaled by a per-face intensity so the classes overlap a little.
    k = _u(rng, 0.55, 1.0)
    eyes, ey = _paint_eyes(img, head, rng, k)
    ny, nose_w = _paint_nose(img, head, ey)
    my, mw = _paint_mouth(img, head, rng, k)
    if head.age >= 3:
        _paint_folds(img, head, ny=ny, nose_w=nose_w, my=my, mw=mw)
    landmarks = [*eyes, (head.cx, ny), (head.cx - mw, my), (head.cx + mw, my)]
    return np.clip(img, 0, 255).astype(np.uint8), np.array(landmarks, np.float32)


def render_face(face: _Face, rng: np.random.Generator, *, size: int, gray: bool) -> tuple[np.ndarray, np.ndarray]:
    """Draw a face, jitter pose/light, downscale to `size`, add noise. Returns (image, landmarks)."""
    img, landmarks = _draw_face(face, rng)
    # A small in-plane rotation, scale and shift: what eye alignment is there to undo.
    angle, scale = float(rng.uniform(-5, 5)), float(rng.uniform(0.92, 1.06))
    matrix = cv2.getRotationMatrix2D((_CANVAS / 2, _CANVAS / 2), angle, scale)
    matrix[:, 2] += rng.uniform(-6, 6, size=2)
    img = cv2.warpAffine(img, matrix, (_CANVAS, _CANVAS), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    landmarks = (np.c_[landmarks, np.ones(len(landmarks))] @ matrix.T) * (size / _CANVAS)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (5, 5), 0)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    if gray:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    out = img.astype(np.float32) * rng.uniform(0.8, 1.15) + rng.uniform(-20, 20)
    out += rng.normal(0, rng.uniform(2, 7), size=out.shape)
    return np.clip(out, 0, 255).astype(np.uint8), landmarks.astype(np.float32)


def _balanced(rng: np.random.Generator, n: int, classes: tuple[str, ...]) -> list[str]:
    """`n` labels cycling through `classes` in random order: every class appears once n >= len."""
    return [classes[i] for i in rng.permutation(np.arange(n) % len(classes))]


def _faces(rng: np.random.Generator, n: int) -> list[_Face]:
    cols = [_balanced(rng, n, t.classes) for t in (EMOTION, GENDER, RACE, AGE)]
    return [_Face(*labels) for labels in zip(*cols, strict=True)]


def _write_fer_csv(path: Path, rng: np.random.Generator, n: int) -> dict[str, int]:
    # ~80/10/10 Training/PublicTest/PrivateTest, each present at least once.
    n_eval = max(1, round(0.1 * n))
    codes = np.zeros(n, dtype=int)
    codes[:n_eval], codes[n_eval : 2 * n_eval] = 1, 2
    usages = [_USAGES[c] for c in rng.permutation(codes)]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["emotion", "pixels", "Usage"])
        for face, usage in zip(_faces(rng, n), usages, strict=True):
            img, _ = render_face(face, rng, size=FER_SIZE, gray=True)
            writer.writerow([_FER_CODES[EMOTION.index(face.emotion)], " ".join(map(str, img.ravel())), usage])
        writer.writerows(_BAD_ROWS)
    return {"faces": n, "malformed_rows": len(_BAD_ROWS), "rows": n + len(_BAD_ROWS)}


def _write_rafdb(root: Path, rng: np.random.Generator, n: int) -> dict[str, int]:
    for sub in ("EmoLabel", "Image/aligned", "Annotation/manual"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    is_test = rng.permutation(np.arange(n) % 5 == 0)  # 20% test, like RAF-DB's 12271/3068
    counters = {"train": 0, "test": 0}
    lines = []
    for face, test in zip(_faces(rng, n), is_test, strict=True):
        prefix = "test" if test else "train"
        counters[prefix] += 1
        stem = f"{prefix}_{counters[prefix]:05d}"
        img, marks = render_face(face, rng, size=RAF_SIZE, gray=False)
        ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        (root / "Image/aligned" / f"{stem}_aligned.jpg").write_bytes(jpeg.tobytes())
        codes = (GENDER.index(face.gender), RACE.index(face.race), AGE.index(face.age))
        text = "".join(f"{x:.2f}\t{y:.2f}\n" for x, y in marks) + "".join(f"{c}\n" for c in codes)
        (root / "Annotation/manual" / f"{stem}_manu_attri.txt").write_text(text)
        lines.append(f"{stem}.jpg {EMOTION.index(face.emotion) + 1}")
    # The deliberately corrupt image: a JPEG header followed by garbage.
    counters["train"] += 1
    stem = f"train_{counters['train']:05d}"
    (root / "Image/aligned" / f"{stem}_aligned.jpg").write_bytes(b"\xff\xd8\xff\xe0" + rng.bytes(200))
    (root / "Annotation/manual" / f"{stem}_manu_attri.txt").write_text(
        "50\t40\n70\t40\n60\t55\n50\t70\n70\t70\n0\n0\n2\n"
    )
    lines.append(f"{stem}.jpg 7")
    (root / "EmoLabel/list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return {"faces": n, "corrupt_images": 1, "entries": n + 1, "train": counters["train"], "test": counters["test"]}


def write_sample_data(out_dir: str | os.PathLike[str], *, n: int = 600, seed: int = 0) -> dict[str, Any]:
    """Write `n` synthetic faces (half FER2013 CSV, half RAF-DB folder) under `out_dir`.

    Returns:
        {"out_dir", "sources": ["fer2013-csv:<path>", "rafdb:<path>"], "fer2013_csv", "rafdb_dir",
        "counts": {"fer2013": {...}, "rafdb": {...}}}: paths as strings and what each holds.

    Raises:
        ConfigError: `n` < 14 (each format needs every emotion class at least once).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2 * EMOTION.num_classes:
        raise ConfigError(f"`n` must be an integer >= {2 * EMOTION.num_classes}, got {n!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_fer = n // 2
    # Separate streams per format: the CSV does not change when only the RAF-DB part changes.
    fer_rng, raf_rng = (np.random.default_rng([seed, i]) for i in range(2))
    csv_path, raf_dir = out / "fer2013.csv", out / "rafdb"
    counts = {"fer2013": _write_fer_csv(csv_path, fer_rng, n_fer), "rafdb": _write_rafdb(raf_dir, raf_rng, n - n_fer)}
    logger.info("wrote %d synthetic faces to %s (%s)", n, out, counts)
    return {
        "out_dir": str(out),
        "sources": [f"fer2013-csv:{csv_path}", f"rafdb:{raf_dir}"],
        "fer2013_csv": str(csv_path),
        "rafdb_dir": str(raf_dir),
        "counts": counts,
    }
