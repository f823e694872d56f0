"""WordNet 3.0 through NLTK, with no implicit download.

Where the reader comes from, in this order:

1. NLTK's own ``wordnet`` corpus, if it is installed anywhere on ``nltk.data.path``;
2. else a corpus folder built from Debian's ``wordnet-base`` + ``wordnet-sense-index`` files, in the
   hrvlm cache.  NLTK refuses symbolic links into ``/usr/share/wordnet``, so the files are copied, and
   Debian ships no ``lexnames`` file, so it is written from the fixed table of ``lexnames(5WN)``;
3. else a :class:`WordNetMissing` error naming the three ways to get it.

Nothing here touches the network except :func:`download`, which the user calls explicitly
(``hrvlm wordnet download``).

The corpus in the hrvlm cache carries a manifest (``MANIFEST.json``: size, mtime and sha256 of every
file) written when it is built or downloaded.  Each process checks sizes and mtimes before reading
(:func:`verify_corpus`; ``hrvlm wordnet status`` also checks the sha256s): a damaged corpus is rebuilt
from Debian's files when they are there, else reported with the command that repairs it.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from hrvlm.core.storage import atomic_write_json, cache_dir, file_sha256

DEBIAN_DIR = Path(os.environ.get("HRVLM_DEBIAN_WORDNET", "/usr/share/wordnet"))

# lexnames(5WN): lexicographer file numbers 00..44 with their syntactic category.
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_DEBIAN_FILES = (
    [f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv")]
    + [f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")]
    + ["index.sense", "cntlist.rev"]
)

HOW_TO_GET = """WordNet 3.0 was not found. Any one of these provides it:
  1. Debian/Ubuntu (offline-friendly): sudo apt-get install wordnet-base wordnet-sense-index
     (hrvlm then builds an NLTK corpus from /usr/share/wordnet by itself);
  2. online, through NLTK: hrvlm wordnet download   (calls nltk.download('wordnet'));
  3. an existing NLTK data folder holding corpora/wordnet: export NLTK_DATA=/path/to/nltk_data"""


MANIFEST = "MANIFEST.json"


class WordNetMissing(RuntimeError):
    """No WordNet 3.0 corpus could be found or built without the network."""


class WordNetCorrupt(WordNetMissing):
    """hrvlm's WordNet corpus no longer matches its manifest and cannot be rebuilt here."""


def lexnames_text() -> str:
    """The 45-line ``lexnames`` file NLTK needs and Debian does not ship."""
    return "".join(f"{i:02d}\t{name}\t{_POS_NUMBER[name.split('.')[0]]}\n" for i, name in enumerate(_LEXNAMES))


def nltk_data_root() -> Path:
    """hrvlm's own NLTK data folder (holds ``corpora/wordnet`` once built)."""
    return cache_dir("nltk_data")


def build_from_debian(root: Path | None = None, source: Path | None = None) -> Path:
    """Copy Debian's WordNet files into ``<root>/corpora/wordnet`` and write ``lexnames``.

    Copies, not links: NLTK 3.10 rejects paths that resolve outside its data folder.  The folder is
    filled under a temporary name and renamed at the end, so an interrupted build leaves nothing half-made.
    """
    root = Path(root) if root is not None else nltk_data_root()
    source = Path(source) if source is not None else DEBIAN_DIR
    missing = [name for name in _DEBIAN_FILES if not (source / name).is_file()]
    if missing:
        raise WordNetMissing(f"Debian WordNet files missing in {source}: {', '.join(missing)}.\n{HOW_TO_GET}")
    target = root / "corpora" / "wordnet"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wordnet.partial.", dir=target.parent))  # one per process
    for name in _DEBIAN_FILES:
        shutil.copyfile(source / name, staging / name)
    (staging / "lexnames").write_text(lexnames_text())
    write_manifest(staging)
    _replace_folder(staging, target)
    return target


def _replace_folder(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``, setting any old ``target`` aside first (a concurrent builder that
    got there first wins; its corpus is as good as ours)."""
    old = target.with_name(f".{target.name}.old.{os.getpid()}")
    if target.exists():
        target.rename(old)
    try:
        new.rename(target)
    except OSError:
        shutil.rmtree(new, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def write_manifest(folder: Path) -> Path:
    """Record size, mtime and sha256 of every file of a corpus folder in its ``MANIFEST.json``."""
    files = {}
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != MANIFEST):
        stat = path.stat()
        files[str(path.relative_to(folder))] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                                                "sha256": file_sha256(path)}
    return atomic_write_json(Path(folder) / MANIFEST, {"files": files})


def verify_corpus(folder: Path, checksums: bool = False) -> list[str] | None:
    """Problems of a corpus folder against its manifest (sizes and mtimes; also the sha256s with
    ``checksums``): ``[]`` when it matches, ``None`` when it has no manifest (built before manifests)."""
    try:
        files = json.loads((Path(folder) / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return [f"{MANIFEST} is unreadable"]
    problems = []
    for name, want in files.items():
        path = Path(folder) / name
        if not path.is_file():
            problems.append(f"{name} is missing")
            continue
        stat = path.stat()
        if stat.st_size != want["size"]:
            problems.append(f"{name} has {stat.st_size} bytes, {want['size']} when built")
        elif (stat.st_mtime_ns != want["mtime_ns"] or checksums) and file_sha256(path) != want["sha256"]:
            problems.append(f"{name} changed since it was built (sha256 differs)")
    return problems


def _check_built_corpus(folder: Path) -> None:
    """Rebuild hrvlm's corpus if it fails :func:`verify_corpus` (or predates manifests) and Debian's
    files are there; a damaged corpus that cannot be rebuilt is a :class:`WordNetCorrupt` error."""
    problems = verify_corpus(folder)
    if not problems and problems is not None:
        return
    debian = all((DEBIAN_DIR / name).is_file() for name in _DEBIAN_FILES)
    if debian:
        if problems:
            warnings.warn(f"WordNet corpus at {folder} was damaged ({problems[0]}); rebuilt from {DEBIAN_DIR}")
        build_from_debian(folder.parent.parent)
    elif problems:
        raise _damaged(folder, problems)


def _damaged(folder: Path, problems: list[str]) -> WordNetCorrupt:
    return WordNetCorrupt(f"the WordNet corpus at {folder} is damaged ({'; '.join(problems[:3])}): repair it with "
                          f"`hrvlm wordnet build` (needs Debian's wordnet-base) or `hrvlm wordnet download`")



def _find_nltk_corpus():
    """NLTK's path pointer to an installed ``corpora/wordnet`` (folder or zip), or None."""
    import nltk

    for name in ("corpora/wordnet", "corpora/wordnet.zip/wordnet/"):
        try:
            return nltk.data.find(name)
        except LookupError:
            continue
    return None


def locate() -> tuple[str, Path | None]:
    """Where WordNet would come from, without building anything: ``("nltk", path)``,
    ``("hrvlm-cache", path)``, ``("debian", source)`` (not built yet) or ``("missing", None)``."""
    own = nltk_data_root() / "corpora" / "wordnet"
    if (own / "lexnames").is_file():
        return "hrvlm-cache", own
    pointer = _find_nltk_corpus()
    if pointer is not None:
        return "nltk", Path(str(pointer))
    if (DEBIAN_DIR / "data.noun").is_file():
        return "debian", DEBIAN_DIR
    return "missing", None


@functools.lru_cache(maxsize=1)
def get_wordnet():
    """NLTK's WordNet 3.0 reader (loaded once per process).  Never downloads."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    kind, _ = locate()
    if kind == "missing":
        raise WordNetMissing(HOW_TO_GET)
    if kind == "debian":
        build_from_debian()
    elif kind == "hrvlm-cache":
        _check_built_corpus(nltk_data_root() / "corpora" / "wordnet")
    if kind in ("debian", "hrvlm-cache"):
        # NLTK only reads corpora from folders on its search path.
        root = str(nltk_data_root())
        if root not in nltk.data.path:
            nltk.data.path.insert(0, root)
    pointer = _find_nltk_corpus()

    class EnglishWordNet(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            # At start NLTK maps the synsets of the corpus called "wordnet" (3.0) onto the loaded version,
            # for multilingual (OMW) data only: half the reader's start (about 3 s), and the identity for 3.0
            return None if version == "wordnet" else super().map_wn(version)

    with warnings.catch_warnings():  # "multilingual functions are not available": we use English only
        warnings.simplefilter("ignore", UserWarning)
        reader = EnglishWordNet(pointer, None)
    if reader.get_version() != "3.0":
        raise WordNetMissing(f"found WordNet {reader.get_version()} at {pointer}; hrvlm needs 3.0.\n{HOW_TO_GET}")
    return reader


def synset(name: str):
    """The synset named exactly ``name`` (e.g. ``cat.n.01``), with an error that says which name was wrong.

    NLTK resolves names through morphology and synonyms (``kat.n.01`` gives ``kat.n.01``'s lemma
    ``khat``), so the returned synset's own name is checked: data files must name synsets canonically.
    """
    from nltk.corpus.reader.wordnet import WordNetError

    try:
        found = get_wordnet().synset(name)
    except (WordNetError, ValueError) as err:
        raise KeyError(f"{name!r} is not a WordNet 3.0 synset name (expected e.g. 'cat.n.01'): {err}") from None
    if found.name() != name:
        raise KeyError(f"{name!r} is not a canonical WordNet 3.0 synset name; NLTK resolves it to {found.name()!r}")
    return found


def lemma_name(synset_name: str) -> str:
    """A synset's first lemma, readable (``motor_vehicle.n.01`` → ``motor vehicle``): how classes and
    superclasses are named in prompts and captions."""
    return synset(synset_name).lemma_names()[0].replace("_", " ")


# ---------------------------------------------------------------- relations in one order
# NLTK keeps a synset's pointers in sets, so ``s.hypernyms()`` lists them in an order that depends on
# PYTHONHASHSEED (``square.n.01`` gives rectangle or regular polygon first).  The library takes hypernyms
# only through :func:`hypernyms`, which sorts them by synset offset (WordNet's data-file order within a
# part of speech), so trees built from them are the same in every process.
def hypernyms(s) -> list:
    """The hypernyms of synset ``s``, instance hypernyms included, by ``(part of speech, offset)``."""
    return sorted(s.hypernyms() + s.instance_hypernyms(), key=lambda h: (h.pos(), h.offset()))


def synset_from_wnid(wnid: str):
    """ImageNet-style wnid (``n01440764``) → synset (``tench.n.01``)."""
    if len(wnid) != 9 or wnid[0] not in "nvar" or not wnid[1:].isdigit():
        raise ValueError(f"{wnid!r} is not a wnid: expected a POS letter and 8 digits, e.g. 'n01440764'")
    return get_wordnet().synset_from_pos_and_offset(wnid[0], int(wnid[1:]))


def download(quiet: bool = False) -> Path:
    """Explicit, online: ``nltk.download('wordnet')`` into hrvlm's NLTK data folder."""
    import nltk

    root = nltk_data_root()
    if not nltk.download("wordnet", download_dir=str(root), quiet=quiet):
        raise WordNetMissing(f"nltk.download('wordnet') failed (no network?).\n{HOW_TO_GET}")
    if (root / "corpora" / "wordnet").is_dir():
        write_manifest(root / "corpora" / "wordnet")
    get_wordnet.cache_clear()
    return root


# ---------------------------------------------------------------- command line
def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", nargs="?", choices=["status", "build", "download"],
                        help="status: say where WordNet comes from; build: build the corpus from Debian's "
                             "files; download: fetch it with nltk.download (needs the network)")
    parser.add_argument("--download", dest="action", action="store_const", const="download",
                        help="same as the action 'download'")
    parser.add_argument("--build", dest="action", action="store_const", const="build",
                        help="same as the action 'build'")


def run(args: argparse.Namespace) -> int:
    if args.action and args.what and args.action != args.what:
        raise ValueError(f"conflicting actions: {args.what!r} and --{args.action}; give one of them")
    args.action = args.action or args.what or "status"
    if args.action == "download":
        print(f"downloaded WordNet into {download()}")
    elif args.action == "build":
        print(f"built WordNet corpus at {build_from_debian()}")
    kind, path = locate()
    if kind == "missing":
        print(HOW_TO_GET)
        return 1
    if kind == "hrvlm-cache":
        problems = verify_corpus(path, checksums=True)
        if problems:
            raise _damaged(path, problems)
    wn = get_wordnet()
    print(f"WordNet {wn.get_version()} from {kind}: {locate()[1]}")
    return 0
