"""Natural and composed images for the third-party zoo's detectors (bench/zoo/third_party.py).

Photos are scikit-image's bundled samples (read from its data folder; scikit-image lives in the
dev venv, never in the project), varied by crops, scales, flips, colour jitter and 2x2 mosaics;
the LFW face crops it ships are pasted in for the person-part detector. Click captchas (large
Chinese characters on photo crops) and document pages (title, paragraphs, figures, tables, header,
footer) are drawn with PIL, their boxes kept.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

import tp_text

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
          "hubble_deep_field.jpg", "ihc.png", "retina.jpg", "camera.png", "brick.png", "grass.png", "gravel.png",
          "coins.png", "moon.png", "page.png", "text.png", "clock_motion.png", "color.png"]


def skimage_dir() -> Path:
    import skimage       # optional: only the dev venv that builds the zoo has it
    return Path(skimage.__file__).parent / "data"


def photos() -> list[Image.Image]:
    folder = skimage_dir()
    return [Image.open(folder / name).convert("RGB") for name in PHOTOS if (folder / name).exists()]


def faces() -> list[Image.Image]:
    """LFW face crops (25x25 grey) shipped with scikit-image, as RGB."""
    arr = np.load(skimage_dir() / "lfw_subset.npy")[:100]
    return [Image.fromarray((a * 255).astype(np.uint8)).convert("RGB") for a in arr]


def jitter(rng: np.random.Generator, img: Image.Image) -> Image.Image:
    img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.7, 1.3)))
    img = ImageEnhance.Contrast(img).enhance(float(rng.uniform(0.7, 1.3)))
    return ImageEnhance.Color(img).enhance(float(rng.uniform(0.6, 1.4)))


def random_crop(rng: np.random.Generator, img: Image.Image, min_frac: float = 0.4) -> Image.Image:
    w, h = img.size
    frac = rng.uniform(min_frac, 1.0)
    cw, ch = int(w * frac * rng.uniform(0.8, 1.0)), int(h * frac * rng.uniform(0.8, 1.0))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = img.crop((x, y, x + cw, y + ch))
    return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else out


def scene(rng: np.random.Generator, pool: list[Image.Image], face_pool: list[Image.Image] | None = None) -> Image.Image:
    """One photo crop, or a 2x2 mosaic of crops; some with face crops pasted at person scale."""
    if rng.random() < 0.35:
        size = int(rng.integers(400, 700))
        img, half = Image.new("RGB", (size, size)), size // 2
        for i in range(4):
            tile = random_crop(rng, pool[int(rng.integers(len(pool)))]).resize((half, half))
            img.paste(tile, ((i % 2) * half, (i // 2) * half))
    else:
        img = random_crop(rng, pool[int(rng.integers(len(pool)))])
        scale = rng.uniform(0.6, 1.6)
        img = img.resize((max(32, int(img.width * scale)), max(32, int(img.height * scale))))
    if face_pool and rng.random() < 0.6:
        for _ in range(int(rng.integers(1, 4))):
            face = face_pool[int(rng.integers(len(face_pool)))]
            side = int(min(img.size) * rng.uniform(0.12, 0.4))
            img.paste(face.resize((side, int(side * 1.2))),
                      (int(rng.integers(0, img.width - side + 1)), int(rng.integers(0, max(1, img.height - side * 1.2)))))
    return jitter(rng, img)


def click_captcha(rng: np.random.Generator, pool: list[Image.Image], w: int, h: int):
    """A click-the-characters captcha: 3-6 large Chinese characters (or Latin if no CJK font) on a
    photo crop, each in a colour with an outline, tilted; returns (image, character boxes)."""
    img = jitter(rng, random_crop(rng, pool[int(rng.integers(len(pool)))]).resize((w, h)))
    chars = list(tp_text.HANZI) if tp_text.has_cjk() else list("ABCDEFGHKMNPRSTUVWXYZ")
    boxes, taken = [], []
    for _ in range(int(rng.integers(3, 7))):
        size = int(rng.integers(28, 52))
        fnt = tp_text.font_for(rng, chars[0], size) if tp_text.has_cjk() else tp_text.font(tp_text.latin_fonts()[0], size)
        glyph = Image.new("RGBA", (size * 2, size * 2), (0, 0, 0, 0))
        colour = tuple(int(v) for v in rng.uniform(0, 255, 3)) + (255,)
        ImageDraw.Draw(glyph).text((size // 2, size // 2), str(rng.choice(chars)), font=fnt, fill=colour,
                                   stroke_width=int(rng.integers(0, 3)), stroke_fill=(255, 255, 255, 255))
        glyph = glyph.rotate(float(rng.uniform(-35, 35)))
        for _try in range(10):
            x, y = int(rng.integers(0, w - size * 2)), int(rng.integers(0, h - size * 2))
            bbox = glyph.getbbox()
            box = (x + bbox[0], y + bbox[1], x + bbox[2], y + bbox[3])
            if all(box[2] < t[0] or box[0] > t[2] or box[3] < t[1] or box[1] > t[3] for t in taken):
                img.paste(glyph, (x, y), glyph)
                taken.append(box)
                boxes.append(box)
                break
    return img, boxes


def document(rng: np.random.Generator, pool: list[Image.Image], w: int, h: int, charset, cjk: bool):
    """A document page: header, title, paragraphs, a figure with caption, a table, footer.
    Returns (image, [(label, box)]) with labels of the CDLA layout classes."""
    img = tp_text.background(rng, w, h)
    draw, items, y = ImageDraw.Draw(img), [], int(rng.integers(15, 40))
    margin = int(rng.integers(30, 70))
    size = int(rng.integers(11, 16))
    body = tp_text.font_for(rng, "x", size)

    def para(y0: int, lines: int, label: str = "text") -> int:
        top = y0
        for _ in range(lines):
            text = " ".join(tp_text.phrase(rng, charset, cjk, 30) for _ in range(3))
            draw.text((margin, y0), text[: (w - 2 * margin) // (size + 1)], font=tp_text.font_for(rng, text, size),
                      fill=(20, 20, 20))
            y0 += size + 4
        items.append((label, (margin, top, w - margin, y0)))
        return y0 + int(rng.integers(8, 20))

    y = para(y, 1, "header") if rng.random() < 0.7 else y
    text = tp_text.phrase(rng, charset, cjk, 20)
    title = tp_text.font_for(rng, text, int(rng.integers(20, 32)))
    box = draw.textbbox((margin, y), text, font=title)
    draw.text((margin, y), text, font=title, fill=(0, 0, 0))
    items.append(("title", box))
    y = box[3] + 15
    while y < h - 120:
        pick = rng.random()
        if pick < 0.5:
            y = para(y, int(rng.integers(3, 9)))
        elif pick < 0.75:
            fh = int(rng.integers(80, 200))
            fig = random_crop(rng, pool[int(rng.integers(len(pool)))]).resize((w - 2 * margin, fh))
            img.paste(fig, (margin, y))
            items.append(("figure", (margin, y, w - margin, y + fh)))
            y = para(y + fh + 6, 1, "figure_caption")
        else:
            y = para(y, 1, "table_caption")
            rows, cols, rh = int(rng.integers(3, 8)), int(rng.integers(3, 6)), size + 8
            cw = (w - 2 * margin) // cols
            for r in range(rows):
                for c in range(cols):
                    cell = (margin + c * cw, y + r * rh, margin + (c + 1) * cw, y + (r + 1) * rh)
                    draw.rectangle(cell, outline=(60, 60, 60))
                    draw.text((cell[0] + 4, cell[1] + 3), str(rng.integers(0, 9999)), font=body, fill=(0, 0, 0))
            items.append(("table", (margin, y, margin + cols * cw, y + rows * rh)))
            y += rows * rh + 15
    if rng.random() < 0.7:
        para(h - 40, 1, "footer")
    return img, items


def letterbox_topleft(img: Image.Image, size: int, fill: int) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio so the long side is `size`, pad right/bottom (YOLOX style)."""
    r = min(size / img.width, size / img.height)
    canvas = Image.new("RGB", (size, size), (fill,) * 3)
    canvas.paste(img.resize((int(img.width * r), int(img.height * r)), Image.Resampling.BILINEAR), (0, 0))
    return np.asarray(canvas), r


def pad_square_resize(img: Image.Image, size: int) -> np.ndarray:
    """nudenet's preprocessing: pad right/bottom with black to a square, then resize to size."""
    side = max(img.size)
    canvas = Image.new("RGB", (side, side))
    canvas.paste(img, (0, 0))
    return np.asarray(canvas.resize((size, size), Image.Resampling.BILINEAR))
