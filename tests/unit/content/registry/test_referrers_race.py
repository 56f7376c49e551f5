"""The referrers tag-schema fallback index under concurrent writers.

A fake registry (the in-memory one, plus ``ETag`` on the fallback tag and, when
asked, ``If-Match`` / ``If-None-Match`` on its PUT) lets "another writer" change
the index at chosen moments: right after our GET, or right after our PUT. Requests
are counted, never timed; the backoff sleeps on the fake clock of the ``retry``
fixture, so nothing really waits.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest

from modelreg.content.registry import RegistryTarget, referrers_tag
from modelreg.content.registry.target import REFERRERS_UPDATE_ATTEMPTS
from modelreg.errors import RegistryError
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import Index, Manifest, empty_config
from tests.unit.content.registry.conftest import FakeClock, MakeClient
from tests.unit.content.registry.fakes import FakeRegistry, referrer_manifest

REPO = "team/llm"
SIG = "application/vnd.test.sig"

Hook = Callable[["ConditionalRegistry", str], None]


@dataclass
class ConditionalRegistry(FakeRegistry):
    """The fake registry with an ``ETag`` and optional conditional PUTs on fallback tags.

    ``etag_format`` turns the manifest digest into the ``ETag`` header (None: no
    header). ``after_get`` runs after each GET of a fallback tag is answered and
    ``after_put`` after each PUT of one is applied, with the tag; they play the
    other writer.
    """

    honour_conditions: bool = True
    always_refuse_conditions: bool = False  # 412 to any conditional PUT (a broken registry)
    etag_format: str | None = '"{}"'
    after_get: Hook | None = None
    after_put: Hook | None = None
    refused: int = 0
    puts: list[httpx.Request] = field(default_factory=list)

    def _manifest(self, request: httpx.Request, repo: str, ref: str) -> httpx.Response:
        if not ref.startswith("sha256-"):
            return super()._manifest(request, repo, ref)
        if request.method == "PUT":
            self.puts.append(request)
            conditional = "if-match" in request.headers or "if-none-match" in request.headers
            if self.always_refuse_conditions and conditional:
                self.refused += 1
                return httpx.Response(412)
            if self.honour_conditions and not self._preconditions_hold(request, repo, ref):
                self.refused += 1
                return httpx.Response(412)
            response = super()._manifest(request, repo, ref)
            if self.after_put is not None:
                self.after_put(self, ref)
            return response
        response = super()._manifest(request, repo, ref)
        current = self.tags.get(repo, {}).get(ref)
        if response.status_code == 200 and current and self.etag_format is not None:
            response.headers["ETag"] = self.etag_format.format(current)
        if request.method == "GET" and self.after_get is not None:
            self.after_get(self, ref)
        return response

    def _preconditions_hold(self, request: httpx.Request, repo: str, ref: str) -> bool:
        current = self.tags.get(repo, {}).get(ref)
        if request.headers.get("if-none-match") == "*" and current is not None:
            return False
        if_match = request.headers.get("if-match")
        return if_match is None or (current is not None and if_match == f'"{current}"')

    # ------------------------------------------------------------ the other writer
    def entries(self, ref: str) -> tuple[Descriptor, ...]:
        digest = self.tags.get(REPO, {}).get(ref)
        if digest is None:
            return ()
        return Index.parse(self.manifests[REPO][digest][1]).manifests

    def write_index(self, ref: str, entries: tuple[Descriptor, ...]) -> None:
        self.put_manifest(REPO, Index(manifests=entries).raw, mt.OCI_INDEX, ref)


_other_ids = itertools.count()


def other_entry() -> Descriptor:
    """A referrer pushed by someone else."""
    data = f"other writer {next(_other_ids)}".encode()
    return Descriptor(mt.OCI_MANIFEST, Digest.from_bytes(data), len(data), artifact_type=SIG)


@pytest.fixture
def fake() -> ConditionalRegistry:
    return ConditionalRegistry()


@pytest.fixture
def repo(make_client: MakeClient) -> RegistryTarget:
    return make_client().repository(REPO)


def subject_of(fake: FakeRegistry) -> Descriptor:
    manifest = Manifest(config=empty_config(), layers=(), artifact_type=mt.MODEL_ARTIFACT)
    fake.put_manifest(REPO, manifest.raw, mt.OCI_MANIFEST, "v1")
    return manifest.descriptor()


def subject_and_tag(fake: FakeRegistry) -> tuple[Descriptor, str]:
    """A subject in the registry and the fallback tag its referrers index goes under."""
    subject = subject_of(fake)
    return subject, referrers_tag(subject.digest)


def referrer(subject: Descriptor, note: str) -> Manifest:
    return referrer_manifest(subject, SIG, note)


def another_writer_adds_once(fake: ConditionalRegistry, entry: Descriptor) -> None:
    """Another writer adds ``entry`` to a fallback index between our first GET of it and
    our PUT, once."""
    fired: list[str] = []

    def concurrent_writer(registry: ConditionalRegistry, ref: str) -> None:
        if not fired:  # between our first GET and our PUT
            fired.append(ref)
            registry.write_index(ref, (*registry.entries(ref), entry))

    fake.after_get = concurrent_writer


def another_writer_puts_back_once(
    fake: ConditionalRegistry, entries: tuple[Descriptor, ...]
) -> None:
    """Another writer, which read the index before our PUT, writes it back as ``entries``
    after our PUT, once (what conditional requests would have refused)."""
    fired: list[str] = []

    def late_writer(registry: ConditionalRegistry, ref: str) -> None:
        if not fired:
            fired.append(ref)
            registry.write_index(ref, entries)

    fake.after_put = late_writer


def tag_requests(fake: FakeRegistry, method: str, tag: str) -> int:
    return fake.count(method, f"/manifests/{tag}$")


# ====================================================================== (a) 412


@pytest.mark.parametrize("tag_existed", [True, False], ids=["if-match", "if-none-match"])
def test_lost_conditional_put_rereads_and_keeps_both(
    fake: ConditionalRegistry, repo: RegistryTarget, tag_existed: bool
) -> None:
    subject, tag = subject_and_tag(fake)
    earlier = other_entry()
    if tag_existed:
        fake.write_index(tag, (earlier,))
    theirs = other_entry()
    another_writer_adds_once(fake, theirs)
    sig = referrer(subject, "ours")
    repo.push_manifest(sig.descriptor(), sig.raw)

    before = (earlier,) if tag_existed else ()
    assert [d.digest for d in fake.entries(tag)] == [
        *(d.digest for d in before),
        theirs.digest,
        sig.digest,
    ]
    assert fake.refused == 1
    assert len(fake.puts) == 2
    first, second = fake.puts
    if tag_existed:
        assert first.headers["if-match"] == f'"{Index(manifests=(earlier,)).digest}"'
    else:
        assert first.headers["if-none-match"] == "*"
    assert second.headers["if-match"] == f'"{Index(manifests=(*before, theirs)).digest}"'
    # read, 412, read again, PUT, verify
    assert tag_requests(fake, "GET", tag) == 3
    assert [d.digest for d in repo.referrers(subject)] == [d.digest for d in fake.entries(tag)]


# ====================================================================== (b) verify-after-write


def test_replaced_index_is_noticed_by_verify_after_write(
    fake: ConditionalRegistry, repo: RegistryTarget
) -> None:
    fake.honour_conditions = False  # like Distribution 2.8
    subject, tag = subject_and_tag(fake)
    earlier = other_entry()
    fake.write_index(tag, (earlier,))
    theirs = other_entry()
    another_writer_puts_back_once(fake, (earlier, theirs))
    sig = referrer(subject, "ours")
    repo.push_manifest(sig.descriptor(), sig.raw)

    assert [d.digest for d in fake.entries(tag)] == [earlier.digest, theirs.digest, sig.digest]
    assert fake.refused == 0
    assert len(fake.puts) == 2
    assert tag_requests(fake, "GET", tag) == 4  # read, verify (lost), read, verify


# ====================================================================== (c) the bound


@pytest.mark.parametrize("honour_conditions", [True, False], ids=["412", "replaced"])
def test_gives_up_after_the_bound(
    fake: ConditionalRegistry, repo: RegistryTarget, clock: FakeClock, honour_conditions: bool
) -> None:
    fake.honour_conditions = honour_conditions
    subject, tag = subject_and_tag(fake)

    def always_changing(registry: ConditionalRegistry, ref: str) -> None:
        registry.write_index(ref, (*registry.entries(ref)[:1], other_entry()))

    if honour_conditions:
        fake.after_get = always_changing
    else:
        fake.after_put = lambda registry, ref: registry.write_index(ref, (other_entry(),))
    sig = referrer(subject, "ours")
    with pytest.raises(RegistryError) as info:
        repo.push_manifest(sig.descriptor(), sig.raw)

    assert f"referrers index of {subject.digest}" in info.value.message
    assert "kept changing under concurrent writers" in info.value.message
    assert info.value.hint is not None and "retry" in info.value.hint
    assert len(fake.puts) == REFERRERS_UPDATE_ATTEMPTS
    assert fake.refused == (REFERRERS_UPDATE_ATTEMPTS if honour_conditions else 0)
    assert len(clock.sleeps) == REFERRERS_UPDATE_ATTEMPTS - 1  # a pause between attempts
    assert sig.digest not in {d.digest for d in fake.entries(tag)}
    assert str(sig.digest) in fake.manifests[REPO]  # the referrer itself was pushed


@pytest.mark.parametrize("tag_exists", [False, True], ids=["new-tag", "existing-tag"])
def test_a_412_for_nothing_changed_turns_conditions_off(
    fake: ConditionalRegistry, repo: RegistryTarget, tag_exists: bool
) -> None:
    fake.always_refuse_conditions = True
    subject, tag = subject_and_tag(fake)
    earlier = other_entry()
    if tag_exists:
        fake.write_index(tag, (earlier,))
    sig = referrer(subject, "ours")
    repo.push_manifest(sig.descriptor(), sig.raw)

    assert fake.refused == 1  # one refusal, then the state read again is the same
    assert len(fake.puts) == 2
    assert not {"if-match", "if-none-match"} & set(fake.puts[1].headers.keys())
    expected = [earlier.digest, sig.digest] if tag_exists else [sig.digest]
    assert [d.digest for d in fake.entries(tag)] == expected


# ====================================================================== (d) headers


def test_condition_headers(fake: ConditionalRegistry, repo: RegistryTarget) -> None:
    subject, tag = subject_and_tag(fake)
    sig = referrer(subject, "one")
    att = referrer(subject, "two")

    repo.push_manifest(sig.descriptor(), sig.raw)
    [first] = fake.puts
    assert first.headers["if-none-match"] == "*"
    assert "if-match" not in first.headers
    assert (tag_requests(fake, "GET", tag), tag_requests(fake, "PUT", tag)) == (2, 1)

    etag = f'"{fake.tags[REPO][tag]}"'
    repo.push_manifest(att.descriptor(), att.raw)
    second = fake.puts[1]
    assert second.headers["if-match"] == etag
    assert "if-none-match" not in second.headers
    assert (tag_requests(fake, "GET", tag), tag_requests(fake, "PUT", tag)) == (4, 2)

    repo.push_manifest(sig.descriptor(), sig.raw)  # already listed: one GET, no PUT
    assert (tag_requests(fake, "GET", tag), tag_requests(fake, "PUT", tag)) == (5, 2)
    assert [d.digest for d in fake.entries(tag)] == [sig.digest, att.digest]
    assert fake.refused == 0


@pytest.mark.parametrize(
    "etag_format",
    [None, 'W/"{}"', '""', "", "{}", '"{0}", "{0}"'],
    ids=["absent", "weak", "empty-quoted", "blank", "unquoted", "list"],
)
def test_no_if_match_without_a_usable_etag(
    fake: ConditionalRegistry, repo: RegistryTarget, etag_format: str | None
) -> None:
    fake.etag_format = etag_format
    subject, tag = subject_and_tag(fake)
    sig = referrer(subject, "one")
    att = referrer(subject, "two")
    repo.push_manifest(sig.descriptor(), sig.raw)
    repo.push_manifest(att.descriptor(), att.raw)
    second = fake.puts[1]
    assert "if-match" not in second.headers
    assert "if-none-match" not in second.headers
    assert [d.digest for d in fake.entries(tag)] == [sig.digest, att.digest]


def test_oci_subject_means_no_fallback_requests(
    fake: ConditionalRegistry, repo: RegistryTarget
) -> None:
    fake.oci_subject = True
    subject, tag = subject_and_tag(fake)
    sig = referrer(subject, "one")
    repo.push_manifest(sig.descriptor(), sig.raw)
    assert not [r for r in fake.requests if tag in r.url.path]
    assert fake.puts == []


# ====================================================================== (e) removing one entry


def test_remove_rereads_on_412_and_keeps_a_concurrent_entry(
    fake: ConditionalRegistry, repo: RegistryTarget
) -> None:
    subject, tag = subject_and_tag(fake)
    earlier, ours, theirs = other_entry(), other_entry(), other_entry()
    fake.write_index(tag, (earlier, ours))
    another_writer_adds_once(fake, theirs)
    assert repo.remove_referrer(subject.digest, ours.digest)

    assert [d.digest for d in fake.entries(tag)] == [earlier.digest, theirs.digest]
    assert fake.refused == 1
    first, second = fake.puts
    assert first.headers["if-match"] == f'"{Index(manifests=(earlier, ours)).digest}"'
    assert second.headers["if-match"] == f'"{Index(manifests=(earlier, ours, theirs)).digest}"'


def test_remove_corrects_a_writer_that_puts_it_back(
    fake: ConditionalRegistry, repo: RegistryTarget
) -> None:
    fake.honour_conditions = False  # like Distribution 2.8
    subject, tag = subject_and_tag(fake)
    earlier, ours, theirs = other_entry(), other_entry(), other_entry()
    fake.write_index(tag, (earlier, ours))
    another_writer_puts_back_once(fake, (earlier, ours, theirs))
    assert repo.remove_referrer(subject.digest, ours.digest)

    assert [d.digest for d in fake.entries(tag)] == [earlier.digest, theirs.digest]
    assert len(fake.puts) == 2
    assert tag_requests(fake, "GET", tag) == 4  # read, verify (listed again), read, verify


def test_remove_the_last_entry_deletes_the_index(
    fake: ConditionalRegistry, repo: RegistryTarget
) -> None:
    subject, tag = subject_and_tag(fake)
    ours, absent = other_entry(), other_entry()
    fake.write_index(tag, (ours,))
    assert not repo.remove_referrer(subject.digest, absent.digest)
    assert fake.puts == []
    assert repo.remove_referrer(subject.digest, ours.digest)
    index = str(Index(manifests=(ours,)).digest)
    assert index not in fake.manifests[REPO]
    assert fake.count("DELETE", f"/manifests/{index}$") == 1
    assert repo.referrers(subject) == []
    assert fake.puts == []  # deleted by digest, never rewritten empty
    assert not repo.remove_referrer(subject.digest, ours.digest)
