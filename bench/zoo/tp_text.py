"""Rendered text for the third-party zoo (bench/zoo/third_party.py): text lines, document pages,
captchas, with their ground truth (strings, boxes), drawn with PIL and the Debian fonts.

Fonts: DejaVu and Liberation (Latin), WenQuanYi Micro Hei (`apt-get install fonts-wqy-microhei`,
Chinese; without it the corpus is Latin only and meta.json says so). Every image is RGB uint8 (PIL);
the model makers (tp_makers.py) apply each package's own preprocessing.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_DIRS = [Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation")]
CJK_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
LATIN_FONTS = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf",
               "DejaVuSansCondensed.ttf", "LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf",
               "LiberationSerif-Regular.ttf", "LiberationSerif-Italic.ttf", "LiberationMono-Regular.ttf",
               "LiberationSansNarrow-Regular.ttf"]
WORDS = ("the of and to in is for on with as by at from that this be are was or an it not we can all "
         "data model input output image text line page table figure result value total price date time "
         "order number name address phone email account invoice report summary section chapter note "
         "open close start stop update system device network sensor camera battery power level status "
         "error warning ready free sale new best quality service customer support version release").split()
# Common Chinese characters (frequency-list order); filtered by the model's charset and the font.
HANZI = ("的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后"
         "小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知"
         "民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新"
         "什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别"
         "处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受"
         "光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃")


def latin_fonts() -> list[Path]:
    paths = [d / f for d in FONT_DIRS for f in LATIN_FONTS if (d / f).exists()]
    if not paths:
        raise SystemExit("no DejaVu/Liberation fonts: apt-get install fonts-dejavu-core fonts-liberation")
    return paths


def has_cjk() -> bool:
    return CJK_FONT.exists()


def font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size)


# --- strings ------------------------------------------------------------------------------------
def phrase(rng: np.random.Generator, charset: set[str] | None, cjk: bool, max_chars: int = 24) -> str:
    """A line of text: words, numbers, prices, dates, codes; Chinese when cjk (and the charset has it)."""
    kind = rng.choice(["words", "numbers", "code", "hanzi" if cjk else "words", "mixed" if cjk else "words"])
    if kind == "numbers":
        text = rng.choice([f"{rng.integers(1, 9999)}.{rng.integers(0, 99):02d}",
                           f"20{rng.integers(10, 30)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}",
                           f"{rng.integers(100, 999)} {rng.integers(1000, 9999)} {rng.integers(1000, 9999)}",
                           f"No. {rng.integers(1, 99999)}", f"${rng.integers(1, 999)}.{rng.integers(0, 99):02d}"])
    elif kind == "code":
        alphabet = list("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789")
        text = "".join(rng.choice(alphabet, rng.integers(4, 10))) + rng.choice(["", "-" + str(rng.integers(10, 99))])
    elif kind == "hanzi":
        text = "".join(rng.choice(list(HANZI), rng.integers(2, 11)))
    elif kind == "mixed":
        text = "".join(rng.choice(list(HANZI), rng.integers(2, 6))) + str(rng.integers(1, 999))
    else:
        words = list(rng.choice(WORDS, rng.integers(1, 6)))
        if rng.random() < 0.5:
            words[0] = words[0].capitalize()
        text = " ".join(words) + rng.choice(["", "", ".", ":", ","])
    text = text[:max_chars].strip() or "text"
    if charset is not None:
        text = "".join(c for c in text if c in charset or c == " ").strip() or "0"
    return text


def font_for(rng: np.random.Generator, text: str, size: int) -> ImageFont.FreeTypeFont:
    if any(ord(c) > 0x2E80 for c in text):
        return font(CJK_FONT, size)
    return font(rng.choice(latin_fonts()), size)


# --- images -------------------------------------------------------------------------------------
def background(rng: np.random.Generator, w: int, h: int, light: bool = True) -> Image.Image:
    """A paper-like or tinted background: a base colour, a gentle gradient, grain."""
    base = rng.uniform(200, 255, 3) if light else rng.uniform(20, 90, 3)
    ramp = np.linspace(-1, 1, w)[None, :, None] * rng.uniform(-20, 20, 3)
    grain = rng.normal(0, rng.uniform(1, 8), (h, w, 1))
    return Image.fromarray(np.clip(base + ramp + grain, 0, 255).astype(np.uint8))


def text_line(rng: np.random.Generator, text: str, height: int | None = None) -> Image.Image:
    """A cropped text line as a detector would hand it to the recognizer: margins, tilt, blur."""
    size = int(height or rng.integers(22, 44))
    fnt = font_for(rng, text, size)
    x0, y0, x1, y1 = fnt.getbbox(text)
    pad_x, pad_y = int(rng.integers(2, 12)), int(rng.integers(2, 9))
    light = rng.random() < 0.85
    img = background(rng, x1 - x0 + 2 * pad_x, y1 - y0 + 2 * pad_y, light)
    ink = tuple(int(v) for v in (rng.uniform(0, 80, 3) if light else rng.uniform(190, 255, 3)))
    ImageDraw.Draw(img).text((pad_x - x0, pad_y - y0), text, font=fnt, fill=ink)
    if rng.random() < 0.3:
        img = img.rotate(float(rng.uniform(-2.5, 2.5)), expand=True, fillcolor=img.getpixel((0, 0)))
    if rng.random() < 0.4:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.1))))
    return img


def page(rng: np.random.Generator, w: int, h: int, charset, cjk: bool, scene: Image.Image | None = None):
    """A document page (or a photo with signs on it) with text lines; returns (image, line boxes)."""
    img = background(rng, w, h) if scene is None else scene.resize((w, h)).convert("RGB")
    draw, boxes, y = ImageDraw.Draw(img), [], int(rng.integers(10, 60))
    while y < h - 40:
        size = int(rng.integers(14, 40))
        text = " ".join(phrase(rng, charset, cjk, 40) for _ in range(int(rng.integers(1, 4))))
        fnt = font_for(rng, text, size)
        x = int(rng.integers(10, max(11, w // 3)))
        bx0, by0, bx1, by1 = draw.textbbox((x, y), text, font=fnt)
        if bx1 < w - 5 and scene is None:
            draw.text((x, y), text, font=fnt, fill=tuple(int(v) for v in rng.uniform(0, 90, 3)))
            boxes.append((bx0, by0, bx1, by1))
        elif bx1 < w - 5:       # a sign: a plate behind the text
            plate = tuple(int(v) for v in rng.uniform(150, 255, 3))
            draw.rectangle((bx0 - 6, by0 - 4, bx1 + 6, by1 + 4), fill=plate)
            draw.text((x, y), text, font=fnt, fill=tuple(int(v) for v in rng.uniform(0, 70, 3)))
            boxes.append((bx0, by0, bx1, by1))
        y = by1 + int(rng.integers(6, 50))
    return img, boxes


def captcha(rng: np.random.Generator, w: int, h: int, charset) -> tuple[Image.Image, str]:
    """A text captcha: 4-6 characters in mixed fonts/colours, tilted, over noise lines and dots."""
    alphabet = [c for c in "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789" if c in charset]
    text = "".join(rng.choice(alphabet, rng.integers(4, 7)))
    img = background(rng, w, h)
    step = w / (len(text) + 1)
    for i, ch in enumerate(text):
        size = int(h * rng.uniform(0.55, 0.85))
        glyph = Image.new("RGBA", (size * 2, size * 2), (0, 0, 0, 0))
        ImageDraw.Draw(glyph).text((size // 2, size // 4), ch, font=font(rng.choice(latin_fonts()), size),
                                   fill=tuple(int(v) for v in rng.uniform(0, 150, 3)) + (255,))
        glyph = glyph.rotate(float(rng.uniform(-30, 30)))
        img.paste(glyph, (int(step * (i + 0.5) - size * 0.7), int((h - size * 2) / 2 + rng.integers(-3, 4))), glyph)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):
        draw.line([tuple(rng.integers(0, [w, h])) for _ in range(2)], width=int(rng.integers(1, 3)),
                  fill=tuple(int(v) for v in rng.uniform(0, 200, 3)))
    for _ in range(int(w * h * 0.01)):
        x, y = rng.integers(0, [w, h])
        draw.point((int(x), int(y)), fill=tuple(int(v) for v in rng.uniform(0, 255, 3)))
    return img, text
