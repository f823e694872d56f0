"""The book builds offline and renders: math through the vendored MathJax, figures, tables."""
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from hrvlm import book

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    index = book.build("smoke", output=out, timeout=600)
    return index.parent


def chromium(*args, timeout=90):
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(["timeout", str(timeout), CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                               *args], capture_output=True, text=True, timeout=timeout + 10)


def test_every_toc_chapter_is_built(smoke_book):
    assert (smoke_book / "index.html").is_file()
    for stem in book.chapter_notebooks(ROOT):
        page = smoke_book / f"{stem}.html"
        assert page.is_file(), stem
        html = page.read_text()
        assert "<h1>" in html and "Traceback (most recent call last)" not in html, stem


def test_mathjax_is_served_from_the_book_itself(smoke_book):
    page = (smoke_book / "book" / "intro.html").read_text()
    assert "cdn.jsdelivr" not in page and "mathjax/tex-svg.js" in page
    assert (smoke_book / "_static" / "mathjax" / "tex-svg.js").stat().st_size > 1_000_000


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (`make test` installs it as root)")
def test_headless_chromium_shows_rendered_math_and_the_figure(smoke_book, tmp_path):
    page = smoke_book / "notebooks" / "00_environment.html"
    dom = chromium("--virtual-time-budget=8000", "--dump-dom", page.as_uri()).stdout
    tex = page.read_text().count("\\(")  # inline math as the builder wrote it, before MathJax
    assert tex >= 3 and dom.count("<mjx-container") >= tex, "MathJax did not typeset the chapter's math"
    assert "\\(" not in re.sub(r"<script.*?</script>", "", dom, flags=re.S), "raw TeX left on the page"
    assert re.search(r'<img[^>]+src="[^"]+\.png"', dom), "the chapter's figure is missing"
    shot = tmp_path / "chapter.png"
    chromium("--window-size=1280,2400", "--virtual-time-budget=8000", f"--screenshot={shot}", page.as_uri())
    from PIL import Image, ImageStat

    image = Image.open(shot).convert("L")
    assert image.size == (1280, 2400) and ImageStat.Stat(image).stddev[0] > 20  # a rendered page, not blank


def test_failing_chapter_is_named_with_its_cell(tmp_path):
    (tmp_path / "notebooks").mkdir()
    shutil.copy(ROOT / "_config.yml", tmp_path)
    shutil.copytree(ROOT / "book", tmp_path / "book")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: notebooks/99_broken\n")
    source = (ROOT / "notebooks" / "00_environment.py").read_text().split("# %% [markdown]")[0]
    (tmp_path / "notebooks" / "99_broken.py").write_text(
        source + '# %% tags=["parameters"]\nprofile = "mini"\n\n# %%\nx = 1\n\n# %%\nraise ValueError("boom")\n')
    with pytest.raises(book.BookError, match=r"notebooks/99_broken\.py failed in cell \d+ .*ValueError: boom"):
        book.build("smoke", root=tmp_path, output=tmp_path / "_build")


def test_unknown_profile_and_chapter_are_errors():
    with pytest.raises(book.BookError, match="unknown profile"):
        book.build("huge", root=ROOT)
    with pytest.raises(book.BookError, match="no such chapter"):
        book.build("smoke", only=["77_nothing"], root=ROOT)
