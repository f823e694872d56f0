import nltk
import pytest

from hrvlm.hierarchy import wordnet
from hrvlm.cli import main


@pytest.fixture(scope="module")
def wn():
    return wordnet.get_wordnet()


def test_real_wordnet_facts(wn):
    assert wn.get_version() == "3.0"
    ancestors = {s.name() for path in wn.synset("cat.n.01").hypernym_paths() for s in path}
    assert {"feline.n.01", "carnivore.n.01", "mammal.n.01"} <= ancestors
    assert wordnet.synset_from_wnid("n01440764").name() == "tench.n.01"
    assert wn.lemma_from_key("dog%1:05:00::").synset().name() == "dog.n.01"


def test_bad_names_get_clear_errors(wn):
    with pytest.raises(KeyError, match="not a WordNet 3.0 synset"):
        wordnet.synset("zzzq.n.01")
    with pytest.raises(KeyError, match="resolves it to 'ellipse.n.01'"):
        wordnet.synset("oval.n.01")  # a lemma of ellipse.n.01, not a synset name of its own
    with pytest.raises(ValueError, match="is not a wnid"):
        wordnet.synset_from_wnid("tench")


def test_lexnames_table_has_45_numbered_lines():
    lines = wordnet.lexnames_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3" and lines[3] == "03\tnoun.Tops\t1" and lines[44] == "44\tadj.ppl\t3"


@pytest.mark.skipif(not (wordnet.DEBIAN_DIR / "data.noun").is_file(), reason="Debian wordnet-base not installed")
def test_debian_build_is_a_working_corpus_of_copies(tmp_path, monkeypatch):
    target = wordnet.build_from_debian(tmp_path)
    assert not any(p.is_symlink() for p in target.iterdir())
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    reader = WordNetCorpusReader(nltk.data.find("corpora/wordnet"), None)
    assert reader.synset_from_pos_and_offset("n", 1440764).name() == "tench.n.01"
    assert reader.lemma_from_key("dog%1:05:00::").count() > 0


def test_missing_wordnet_names_the_three_ways(tmp_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(wordnet, "DEBIAN_DIR", tmp_path / "no-debian-here")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "no-nltk-here")])
    wordnet.get_wordnet.cache_clear()
    try:
        with pytest.raises(wordnet.WordNetMissing) as err:
            wordnet.get_wordnet()
    finally:
        wordnet.get_wordnet.cache_clear()
    message = str(err.value)
    assert "apt-get install wordnet-base wordnet-sense-index" in message
    assert "hrvlm wordnet download" in message
    assert "NLTK_DATA" in message
    with pytest.raises(wordnet.WordNetMissing, match="Debian WordNet files missing"):
        wordnet.build_from_debian(tmp_path / "out")


def test_cli_status_reports_the_source(capsys):
    assert main(["wordnet", "status"]) == 0
    assert "WordNet 3.0 from" in capsys.readouterr().out


def test_cli_download_is_explicit_and_reaches_nltk(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(nltk, "download", lambda *a, **k: calls.append((a, k)) or False)
    assert main(["wordnet", "--download"]) == 2
    assert "nltk.download('wordnet') failed" in capsys.readouterr().err
    assert calls and calls[0][0] == ("wordnet",)


needs_debian = pytest.mark.skipif(not (wordnet.DEBIAN_DIR / "data.noun").is_file(),
                                  reason="Debian wordnet-base not installed")


@pytest.fixture
def own_corpus(tmp_cache, monkeypatch):
    """A corpus built from Debian's files in an empty hrvlm cache, and a fresh reader cache."""
    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))
    wordnet.get_wordnet.cache_clear()
    yield wordnet.build_from_debian()
    wordnet.get_wordnet.cache_clear()


def _garble(path, at=5000):
    data = bytearray(path.read_bytes())
    data[at:at + 8] = b"XXXXXXXX"
    path.write_bytes(bytes(data))


@needs_debian
def test_damaged_corpus_is_detected_and_rebuilt(own_corpus):
    assert wordnet.verify_corpus(own_corpus, checksums=True) == []
    _garble(own_corpus / "data.noun")  # same size, new content
    assert wordnet.verify_corpus(own_corpus) == ["data.noun changed since it was built (sha256 differs)"]
    with pytest.warns(UserWarning, match="was damaged .*rebuilt from"):
        wn = wordnet.get_wordnet()
    assert wn.synset("cat.n.01").hypernyms() and wordnet.verify_corpus(own_corpus, checksums=True) == []


@needs_debian
def test_damaged_corpus_without_debian_says_how_to_repair(own_corpus, monkeypatch, capsys):
    with open(own_corpus / "data.noun", "r+b") as f:
        f.truncate(1000)
    monkeypatch.setattr(wordnet, "DEBIAN_DIR", own_corpus.parent / "no-debian-here")
    with pytest.raises(wordnet.WordNetCorrupt, match=r"data.noun has 1000 bytes.*hrvlm wordnet build"):
        wordnet.get_wordnet()
    assert main(["wordnet"]) == 2  # the status reports it too
    assert "damaged" in capsys.readouterr().err


@needs_debian
def test_status_compares_checksums_even_when_mtime_is_kept(own_corpus, capsys):
    import os

    stat = (own_corpus / "data.noun").stat()
    _garble(own_corpus / "data.noun")
    os.utime(own_corpus / "data.noun", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # bit rot keeps the mtime
    assert wordnet.verify_corpus(own_corpus) == []  # the quick check cannot see it
    assert main(["wordnet", "status"]) == 2
    assert "sha256 differs" in capsys.readouterr().err


def test_conflicting_action_spellings_are_refused_before_anything_runs(monkeypatch, capsys):
    monkeypatch.setattr(nltk, "download", lambda *a, **k: pytest.fail("downloaded"))
    assert main(["wordnet", "status", "--download"]) == 2
    assert "conflicting actions: 'status' and --download" in capsys.readouterr().err


def test_relations_come_back_by_offset(wn):
    square = wordnet.synset("square.n.01")
    parents = wordnet.hypernyms(square)
    assert [p.name() for p in parents] == sorted((p.name() for p in parents),
                                                 key=lambda n: wordnet.synset(n).offset())
    assert {p.name() for p in parents} == {"rectangle.n.01", "regular_polygon.n.01"}


def test_relation_order_is_the_same_under_every_hash_seed():
    import os
    import subprocess
    import sys

    code = ("from hrvlm.hierarchy.wordnet import hypernyms, synset as s;"
            "print([h.name() for h in hypernyms(s('square.n.01'))])")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in (0, 6, 11)}
    assert len(outputs) == 1
