"""The `github` source against a local fake GitHub (tests/github_fake.py): enumeration past the 1,000-result
cap, paging, qualifiers, exclusions, primary and secondary rate limits, retries, token rotation and secrecy,
tarball downloads (commit, size cap, hostile archives) and resuming after a kill."""

from __future__ import annotations

import copy
import logging
import os
import pickle
import random
import tarfile
from datetime import date, datetime, timezone

import pytest
from github_fake import (
    FAKE_NOW,
    HOSTILE_KINDS,
    FakeClock,
    FakeGithub,
    FakeRepo,
    hostile_repo,
    make_population,
)
from loopback_http import LoopbackHTTPServer
from pydantic import ValidationError

from codemill.crawl.sources.base import FetchError, RepoRef
from codemill.crawl.sources.github import (
    SEARCH_RESULT_CAP,
    GithubSource,
    GithubSourceConfig,
    SearchSlice,
)
from codemill.crawl.sources.github_client import ApiError, Tokens
from codemill.crawl.sources.ratelimit import (
    RESET_MARGIN_S,
    SECONDARY_LIMIT_WAIT_S,
    Grant,
    RateHeaders,
    RateLimiter,
    classify_response,
)

PYTHON = "stars:>=1 size:<=10240 language:Python"
JAVA = "stars:>=1 size:<=10240 language:Java"
SECRET_A, SECRET_B = "ghp_SECRETaaaaaaaaaaaaaaaaaaaaaaaaaaaa1", "ghp_SECRETbbbbbbbbbbbbbbbbbbbbbbbbbbbb2"


@pytest.fixture(scope="module")
def population() -> list[FakeRepo]:
    return make_population()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tokens_env(monkeypatch):
    """Sets GITHUB_TOKENS to the given tokens (and nothing else) for the test."""
    def set_tokens(*tokens: str) -> None:
        monkeypatch.delenv("GITHUB_TOKEN", raising=False)
        if tokens:
            monkeypatch.setenv("GITHUB_TOKENS", ",".join(tokens))
        else:
            monkeypatch.delenv("GITHUB_TOKENS", raising=False)
    return set_tokens


def source(fake: FakeGithub, clock: FakeClock | None, **config) -> GithubSource:
    cfg = GithubSourceConfig(api_url=fake.api_url, **{"languages": ["Python"], **config})
    if clock is None:
        return GithubSource(cfg, rng=random.Random(0))
    return GithubSource(cfg, clock=clock.time, sleep=clock.sleep, rng=random.Random(0))


def names(refs) -> list[str]:
    return [r.full_name for r in refs]


# -- enumeration ---------------------------------------------------------------------------------------------

def test_every_match_is_listed_once_when_far_over_the_cap(population, clock, tokens_env):
    tokens_env(SECRET_A)
    with FakeGithub(population, tokens={SECRET_A: {"search": 100_000}}, clock=clock) as fake:
        src = source(fake, clock)
        refs = list(src.list_repos())
        expected = {r.full_name for r in fake.matching(PYTHON)}
        searches = fake.recorded("api", "/search/")

    assert len(expected) > 2 * SEARCH_RESULT_CAP
    assert len(refs) == len(set(names(refs))) and set(names(refs)) == expected
    assert all(r.status == 200 for r in searches)  # never asked past the 1,000th result
    assert all(r.query["per_page"] == "100" and int(r.query["page"]) <= 10 for r in searches)
    assert any(int(r.query["page"]) > 1 for r in searches)
    # The burst day alone holds more than 1,000: it was cut by stars.
    assert any(r.query["q"].startswith("stars:1..2 ") and "created:2020-04-01..2020-04-01" in r.query["q"]
               for r in searches)
    assert src.stats["search_calls"] == len(searches) and src.stats["listed"] == len(expected)
    by_name = {r.full_name: r for r in population}
    for ref in refs[:200]:
        repo = by_name[ref.full_name]
        assert (ref.stars, ref.size_kb, ref.main_language, ref.license, ref.default_branch) == (
            repo.stars, repo.size_kb, "Python", repo.license, repo.default_branch)
        assert ref.source == "github"
        assert ref.location == f"{fake.api_url}/repos/{repo.full_name}/tarball/{repo.default_branch}"


def test_qualifiers_select_stars_size_and_languages(population, clock, tokens_env):
    tokens_env(SECRET_A)
    with FakeGithub(population, tokens={SECRET_A: {"search": 100_000}}, clock=clock) as fake:
        refs = list(source(fake, clock, languages=["Java", "C++"], min_stars=3, max_size_kb=2000).list_repos())
        expected = {r.full_name for lang in ("Java", "C++")
                    for r in fake.matching(f"stars:>=3 size:<=2000 language:{lang}")}
    assert set(names(refs)) == expected and len(refs) == len(expected) > 50
    assert all(r.stars >= 3 and r.size_kb <= 2000 and r.main_language in ("Java", "C++") for r in refs)


def test_slices_partition_the_query_space(population, clock):
    """Each cut gives two slices that hold exactly their parent's repositories, down to atomic slices."""
    with FakeGithub(population, clock=clock) as fake:
        src = GithubSource(GithubSourceConfig(api_url=fake.api_url), clock=clock.time)
        piece: SearchSlice | None = src.root_slice("Python")
        cuts = 0
        while piece is not None and (halves := piece.split()) is not None:
            parent = {r.id for r in fake.matching(piece.query())}
            left, right = ({r.id for r in fake.matching(h.query())} for h in halves)
            assert left | right == parent and not left & right
            piece = max(halves, key=lambda h: len(fake.matching(h.query())))  # follow the fuller half
            cuts += 1
    assert cuts > 20  # through days, stars, sizes and seconds to a slice that cannot be cut


def test_a_slice_that_cannot_be_cut_yields_its_first_thousand_and_says_so(clock, tokens_env):
    tokens_env(SECRET_A)
    created = datetime(2019, 5, 5, 12, 0, 0, tzinfo=timezone.utc)
    twins = [FakeRepo(id=i, full_name=f"twin/r{i}", stars=5, size_kb=42, language="Go", created_at=created,
                      commits=["0" * 40]) for i in range(SEARCH_RESULT_CAP + 100)]
    with FakeGithub(twins, tokens={SECRET_A: {"search": 100_000}}, clock=clock) as fake:
        src = source(fake, clock, languages=["Go"])
        refs = list(src.list_repos())
        statuses = {r.status for r in fake.recorded("api")}
    assert len(refs) == len(set(names(refs))) == SEARCH_RESULT_CAP and statuses == {200}
    assert src.stats["unreachable_results"] == 100


def test_incomplete_results_are_cut_smaller_down_to_a_day(population, clock, tokens_env):
    tokens_env(SECRET_A)
    with FakeGithub(population, tokens={SECRET_A: {"search": 100_000}}, clock=clock, incomplete_over=200) as fake:
        src = source(fake, clock)
        refs = list(src.list_repos())
        expected = {r.full_name for r in fake.matching(PYTHON)}
        queries = [r.query["q"] for r in fake.recorded("api", "/search/")]
    assert set(names(refs)) == expected and len(refs) == len(expected)
    # Days that alone hold more than 200 are accepted as they are, not cut to stars and seconds.
    assert src.stats["incomplete_slices"] > 0
    assert not any(q.startswith("stars:1 ") or "T" in q.split("created:")[1] for q in queries)


def test_max_repos_stops_listing_early(population, clock, tokens_env):
    tokens_env(SECRET_A)
    with FakeGithub(population, tokens={SECRET_A: None}, clock=clock) as fake:
        src = source(fake, clock, max_repos=150)
        refs = list(src.list_repos())
        calls = len(fake.recorded("api", "/search/"))
        again = list(src.list_repos())
    assert len(refs) == 150 and len(set(names(refs))) == 150
    assert calls < 10
    assert names(again) == names(refs) and src.stats["listed"] == 150


# -- rate limits, retries, tokens ----------------------------------------------------------------------------

def test_primary_limit_waits_for_the_reset_without_being_refused(population, clock, tokens_env):
    tokens_env(SECRET_A)
    with FakeGithub(population, tokens={SECRET_A: {"search": 4}}, clock=clock) as fake:
        refs = list(source(fake, clock, languages=["Java"]).list_repos())
        expected = {r.full_name for r in fake.matching(JAVA)}
        statuses = [r.status for r in fake.recorded("api")]
    assert set(names(refs)) == expected
    assert len(statuses) > 4 and set(statuses) == {200}  # the limiter waited before GitHub had to refuse
    assert clock.time() >= FAKE_NOW + 60  # one search window passed while waiting


def test_refusal_with_remaining_zero_waits_until_reset(population, clock, tokens_env):
    tokens_env(SECRET_A)
    with FakeGithub(population, tokens={SECRET_A: None}, clock=clock) as fake:
        fake.exhaust(SECRET_A, "search")  # spent by another client of the same token
        refs = list(source(fake, clock, languages=["Go"]).list_repos())
        statuses = [r.status for r in fake.recorded("api")]
        expected = {r.full_name for r in fake.matching("stars:>=1 size:<=10240 language:Go")}
    assert statuses[0] == 403 and set(statuses[1:]) == {200}
    assert set(names(refs)) == expected
    assert clock.sleeps and clock.time() >= FAKE_NOW + 60


@pytest.mark.parametrize("status", [403, 429])
def test_secondary_limit_retry_after_is_honoured(population, clock, tokens_env, status):
    tokens_env(SECRET_A)
    with FakeGithub(population, tokens={SECRET_A: None}, clock=clock) as fake:
        fake.inject("/search/", status=status, retry_after=7,
                    message="You have exceeded a secondary rate limit. Please wait a few minutes.")
        refs = list(source(fake, clock, languages=["Go"]).list_repos())
        statuses = [r.status for r in fake.recorded("api")]
    assert statuses[0] == status and set(statuses[1:]) == {200} and refs
    assert clock.sleeps == [pytest.approx(7)]


def test_secondary_limit_without_retry_after_waits_a_minute(population, clock, tokens_env):
    tokens_env(SECRET_A)
    with FakeGithub(population, tokens={SECRET_A: None}, clock=clock) as fake:
        fake.inject("/search/", status=429, message="too many requests")
        assert list(source(fake, clock, languages=["Go"]).list_repos())
    assert clock.sleeps == [pytest.approx(SECONDARY_LIMIT_WAIT_S)]


def test_server_errors_and_dropped_connections_are_retried(population, clock, tokens_env):
    tokens_env(SECRET_A)
    with FakeGithub(population, tokens={SECRET_A: None}, clock=clock) as fake:
        fake.inject("/search/", status=502, times=2)
        fake.drop("/search/")
        refs = list(source(fake, clock, languages=["Go"]).list_repos())
        statuses = [r.status for r in fake.recorded("api")]
        expected = {r.full_name for r in fake.matching("stars:>=1 size:<=10240 language:Go")}
    assert statuses[:4] == [502, 502, 0, 200]
    assert set(names(refs)) == expected
    # Jittered exponential backoff from a 1 s base: [0.5, 1], [1, 2], [2, 4].
    assert [lo <= s <= 2 * lo for lo, s in zip([0.5, 1, 2], clock.sleeps)] == [True] * 3


def test_server_errors_beyond_max_retries_give_a_clear_error(population, clock, tokens_env, tmp_path):
    tokens_env(SECRET_A)
    with FakeGithub(population, tokens={SECRET_A: None}, clock=clock) as fake:
        fake.inject("/search/", status=503, times=100, message="Service Unavailable")
        src = source(fake, clock, languages=["Go"], max_retries=2)
        with pytest.raises(ApiError, match=r"GET /search/repositories.*gave up after 3 attempts.*HTTP 503"):
            list(src.list_repos())
        assert len(fake.recorded("api")) == 3
        fake.inject("/repos/", status=500, times=100)
        repo = fake.matching("language:Go stars:>=1")[0]
        with pytest.raises(FetchError, match=r"gave up after 3 attempts.*HTTP 500"):
            src.fetch(_refs_for(fake, [repo])[0], str(tmp_path))


def test_tokens_rotate_when_one_runs_out(population, clock, tokens_env):
    tokens_env(SECRET_A, SECRET_B)
    with FakeGithub(population, tokens={SECRET_A: {"search": 2}, SECRET_B: None}, clock=clock) as fake:
        fake.exhaust(SECRET_A, "search")
        refs = list(source(fake, clock, languages=["Java"]).list_repos())
        used = [(r.token, r.status) for r in fake.recorded("api")]
    assert used[0] == (SECRET_A, 403)  # refused once, then never asked again in its window
    assert set(used[1:]) == {(SECRET_B, 200)} and len(used) > 3
    assert len(refs) > 300 and clock.sleeps == []  # rotation, not waiting


def test_all_tokens_spent_waits_for_the_first_reset(population, clock, tokens_env):
    tokens_env(SECRET_A, SECRET_B)
    with FakeGithub(population, tokens={SECRET_A: {"search": 2}, SECRET_B: {"search": 2}}, clock=clock) as fake:
        refs = list(source(fake, clock, languages=["Java"]).list_repos())
        used = [(r.token, r.status) for r in fake.recorded("api")]
    assert {t for t, _ in used} == {SECRET_A, SECRET_B} and {s for _, s in used} == {200}
    assert len(used) > 4 and len(clock.sleeps) >= 1 and len(refs) > 300


def test_anonymous_access_works_without_tokens(population, clock, tokens_env, caplog):
    tokens_env()
    with FakeGithub(population, clock=clock) as fake, caplog.at_level(logging.WARNING):
        refs = list(source(fake, clock, languages=["Go"]).list_repos())
        assert {r.token for r in fake.requests} == {None}
    assert refs and "anonymous access" in caplog.text


def test_tokens_are_never_logged_shown_or_serialised(population, clock, tokens_env, caplog, tmp_path):
    tokens_env(SECRET_A, SECRET_B)
    with FakeGithub(population, tokens={SECRET_A: {"search": 1}, SECRET_B: {"search": 3}}, clock=clock) as fake, \
            caplog.at_level(logging.DEBUG):
        fake.inject("/search/", status=429, retry_after=3, message="secondary rate limit")
        fake.inject("/search/", status=502, times=1)
        fake.inject("/repos/", status=404, message="Not Found")
        src = source(fake, clock, languages=["Java"])
        refs = list(src.list_repos())
        with pytest.raises(FetchError, match="HTTP 404: Not Found") as failure:
            src.fetch(refs[0], str(tmp_path))
        src.fetch(refs[1], str(tmp_path))
        shown = [caplog.text, repr(src), repr(src.config), repr(src.client()), str(failure.value),
                 repr(src.client().tokens), pickle.dumps(src).decode("latin-1")]
    assert "token #" in caplog.text  # waits and rotations are logged, by index
    for text in shown:
        assert SECRET_A not in text and SECRET_B not in text and "SECRET" not in text
    with pytest.raises(TypeError, match="never serialised"):
        pickle.dumps(src.client().tokens)
    assert {r.token for r in fake.recorded("codeload")} == {None}  # the redirect target never sees a token


def test_tokens_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("GITHUB_TOKENS", "a, b,,a")
    monkeypatch.setenv("GITHUB_TOKEN", "c")
    tokens = Tokens.from_env(GithubSourceConfig().token_env)
    assert len(tokens) == 3 and tokens.slot_count == 3
    assert [tokens.authorization(i) for i in range(3)] == ["Bearer a", "Bearer b", "Bearer c"]
    with pytest.raises(ApiError, match="same token variables"):
        tokens.authorization(3)
    monkeypatch.delenv("GITHUB_TOKENS")
    monkeypatch.delenv("GITHUB_TOKEN")
    anonymous = Tokens.from_env(["GITHUB_TOKENS", "GITHUB_TOKEN"])
    assert anonymous.slot_count == 1 and anonymous.authorization(0) is None
    with pytest.raises(ApiError, match="holds 0 token"):  # a worker without the driver's tokens
        anonymous.authorization(1)


# -- fetching ------------------------------------------------------------------------------------------------

def _refs_for(fake: FakeGithub, repos: list[FakeRepo]) -> list[RepoRef]:
    """The refs `list_repos` makes of these repositories' search items."""
    src = GithubSource(GithubSourceConfig(api_url=fake.api_url, languages=[]))
    return [src._ref(r.search_item(fake.api_url)) for r in repos]


def test_fetch_records_the_commit_it_downloaded(population, clock, tokens_env, tmp_path):
    tokens_env(SECRET_A)
    repos = [copy.deepcopy(r) for r in population if r.commits and r.default_branch == "release/2.x"][:1] + [
        copy.deepcopy(r) for r in population if r.commits and r.default_branch == "main"][:1]  # pushed to
    with FakeGithub(repos, tokens={SECRET_A: None}, clock=clock) as fake:
        src = source(fake, clock)
        for ref, repo in zip(_refs_for(fake, repos), repos):
            fetched = src.fetch(ref, str(tmp_path))
            assert fetched.commit == repo.head and fetched.ref == ref
            owner, name = repo.full_name.split("/")
            assert os.path.basename(fetched.path) == f"{owner}__{name}__{repo.head}.tar.gz"
            with open(fetched.path, "rb") as f:
                assert f.read() == fake.tarball(repo, repo.head)
            with tarfile.open(fetched.path) as tar:
                assert tar.pax_headers["comment"] == fetched.commit  # git archive's record of the commit
                assert {m.name.split("/")[0] for m in tar} == {f"{owner}-{name}-{repo.head[:7]}"}
            asked = fake.recorded("api", f"/repos/{repo.full_name}/tarball/")
            assert [r.path.rsplit("/", 1)[1] for r in asked] == [repo.head]  # by SHA, not by branch
        old = repos[0].head
        new = repos[0].push()
        again = src.fetch(_refs_for(fake, repos[:1])[0], str(tmp_path))
        assert again.commit == new != old
        with tarfile.open(again.path) as tar:
            assert tar.pax_headers["comment"] == new


def test_a_renamed_repository_is_followed_with_the_token(population, clock, tokens_env, tmp_path):
    tokens_env(SECRET_A)
    repo = copy.deepcopy(next(r for r in population if r.commits))  # renamed below
    with FakeGithub([repo], tokens={SECRET_A: None}, clock=clock) as fake:
        ref = _refs_for(fake, [repo])[0]  # listed under the old name
        fake.rename(repo, "newowner/newname")
        fetched = source(fake, clock).fetch(ref, str(tmp_path))
        api = [(r.path.split("/")[1], r.token, r.status) for r in fake.recorded("api")]
        codeload = [(r.token, r.status) for r in fake.recorded("codeload")]
    assert fetched.commit == repo.head
    assert api == [("repos", SECRET_A, 301), ("repositories", SECRET_A, 200),
                   ("repos", SECRET_A, 301), ("repositories", SECRET_A, 302)]
    assert codeload == [(None, 200)]


def test_fetch_failures_are_fetch_errors_with_a_reason(population, clock, tokens_env, tmp_path):
    tokens_env(SECRET_A)
    empty = next(r for r in population if not r.commits)
    present = next(r for r in population if r.commits)
    with FakeGithub([empty, present], tokens={SECRET_A: None}, clock=clock) as fake:
        src = source(fake, clock)
        empty_ref, present_ref = _refs_for(fake, [empty, present])
        with pytest.raises(FetchError, match="empty"):
            src.fetch(empty_ref, str(tmp_path))
        gone = RepoRef(**{**present_ref.to_dict(), "full_name": "nobody/gone"})
        with pytest.raises(FetchError, match="HTTP 404"):
            src.fetch(gone, str(tmp_path))
        bad = RepoRef(**{**present_ref.to_dict(), "full_name": "../../etc"})
        with pytest.raises(FetchError, match="not a GitHub owner/name"):
            src.fetch(bad, str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_tarball_size_cap_stops_the_download(population, clock, tokens_env, tmp_path):
    tokens_env(SECRET_A)
    repo = next(r for r in population if r.commits)
    with FakeGithub([repo], tokens={SECRET_A: None}, clock=clock) as fake:
        size = len(fake.tarball(repo, repo.head))
        with pytest.raises(FetchError, match="cap"):
            source(fake, clock, max_tarball_mb=size / 2 / 2**20).fetch(_refs_for(fake, [repo])[0], str(tmp_path))
        assert os.listdir(tmp_path) == []
        fetched = source(fake, clock, max_tarball_mb=2 * size / 2**20).fetch(_refs_for(fake, [repo])[0],
                                                                               str(tmp_path))
        assert os.path.getsize(fetched.path) == size


def test_a_body_cut_short_is_downloaded_again(population, clock, tokens_env, tmp_path):
    tokens_env(SECRET_A)
    repo = next(r for r in population if r.commits)
    with FakeGithub([repo], tokens={SECRET_A: None}, clock=clock) as fake:
        fake.truncate(f"/{repo.full_name}/")
        fetched = source(fake, clock).fetch(_refs_for(fake, [repo])[0], str(tmp_path))
        with open(fetched.path, "rb") as f:
            assert f.read() == fake.tarball(repo, repo.head)
        assert len(fake.recorded("codeload")) == 2
    assert os.listdir(tmp_path) == [os.path.basename(fetched.path)]


def test_hostile_tarballs_download_intact_and_extract_safely(clock, tokens_env, tmp_path):
    from codemill.crawl import extract

    tokens_env(SECRET_A)
    repos = [hostile_repo(kind, i) for i, kind in enumerate(HOSTILE_KINDS)]
    expected_skip = {"dotdot": {"path_traversal"}, "absolute": {"absolute_path"}, "symlink": {"symlink"},
                     "hardlink": {"hardlink"}, "device": {"special_file"},
                     "huge": {"file_size_cap", "repo_size_cap"}}
    with FakeGithub(repos, tokens={SECRET_A: None}, clock=clock) as fake:
        src = source(fake, clock)
        for ref, repo in zip(_refs_for(fake, repos), repos):
            fetched = src.fetch(ref, str(tmp_path / "downloads"))
            with open(fetched.path, "rb") as f:
                assert f.read() == fake.tarball(repo, repo.head)
            found = list(extract.iter_repo_files(fetched.path, repo.full_name))
            kept = {f.path for f in found if isinstance(f, extract.RepoFile)}
            skipped = {f.reason for f in found if isinstance(f, extract.SkippedFile)}
            assert {"README.md", "src/main.py"} <= kept, repo.hostile
            assert expected_skip[repo.hostile] & skipped, (repo.hostile, skipped)
    assert os.listdir(tmp_path) == ["downloads"]  # nothing was written outside the download folder


# -- resuming --------------------------------------------------------------------------------------------------

def test_resume_after_a_kill_fetches_only_what_is_missing(population, tokens_env, tmp_path):
    """A new process (the source pickled, as Ray ships it) lists the same repositories in the same order,
    replaces a half-written download, and downloads nothing twice."""
    tokens_env(SECRET_A)
    subset = [r for r in population if r.commits and r.language == "Go"][:400]
    workdir = str(tmp_path)
    with FakeGithub(subset, tokens={SECRET_A: None}) as fake:
        first = source(fake, None, languages=["Go"])
        listed = list(first.list_repos())
        half = len(listed) // 2
        for ref in listed[:half]:
            first.fetch(ref, workdir)
        killed = listed[half]
        owner, name = killed.full_name.split("/")
        sha = next(r for r in subset if r.full_name == killed.full_name).head
        with open(os.path.join(workdir, f"{owner}__{name}__{sha}.tar.gz.part"), "wb") as f:
            f.write(b"\x1f\x8b half a download")

        second = pickle.loads(pickle.dumps(first))
        relisted = list(second.list_repos())
        assert names(relisted) == names(listed)
        done = {f.split("__")[0] + "/" + f.split("__")[1] for f in os.listdir(workdir) if f.endswith(".tar.gz")}
        for ref in relisted:
            if ref.full_name not in done:
                second.fetch(ref, workdir)
        downloads = [r.path.split("/")[2] + "/" + r.path.split("/")[3] for r in fake.recorded("api", "/repos/")
                     if "/tarball/" in r.path]
    assert sorted(downloads) == sorted(names(listed))  # each repository downloaded exactly once
    files = os.listdir(workdir)
    assert len(files) == len(listed) and not any(f.endswith(".part") for f in files)


def test_fetch_reuses_a_finished_download(population, clock, tokens_env, tmp_path):
    tokens_env(SECRET_A)
    repo = next(r for r in population if r.commits)
    with FakeGithub([repo], tokens={SECRET_A: None}, clock=clock) as fake:
        src = source(fake, clock)
        ref = _refs_for(fake, [repo])[0]
        assert src.fetch(ref, str(tmp_path)) == src.fetch(ref, str(tmp_path))
        assert len(fake.recorded("codeload")) == 1


# -- config and pure logic -------------------------------------------------------------------------------------

def test_config_defaults_are_the_papers_and_bad_values_are_refused():
    cfg = GithubSourceConfig()
    assert (cfg.type, cfg.min_stars, cfg.max_size_kb, cfg.per_page) == ("github", 1, 10240, 100)
    assert cfg.languages == ["Python", "Java", "C++"]
    for bad, message in (({"type": "git"}, "Input should be 'github'"), ({"per_page": 101}, "less than or equal to 100"),
                         ({"tokens": ["x"]}, "Extra inputs are not permitted"),
                         ({"created_from": date(2020, 1, 2), "created_until": date(2020, 1, 1)},
                          "created_until 2020-01-01 is before created_from 2020-01-02"),
                         ({"api_url": "ftp://x"}, "must start with http:// or https://")):
        with pytest.raises(ValidationError, match=message):
            GithubSourceConfig.model_validate(bad)


def test_limiter_picks_the_token_with_most_budget_and_waits_when_all_are_spent():
    now = [1000.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert limiter.acquire("search").token == 0  # nothing known: the first
    limiter.update(0, "search", RateHeaders("search", 1, 1060))
    limiter.update(1, "search", RateHeaders("search", 5, 1030))
    assert [limiter.acquire("search").token for _ in range(6)] == [1, 1, 1, 1, 0, 1]
    spent = limiter.acquire("search")
    assert spent.wait_s == pytest.approx(30 + RESET_MARGIN_S)
    assert limiter.acquire("core").wait_s == 0  # budgets are per resource
    limiter.update(1, "search", RateHeaders("search", 3, 1030))  # a late answer cannot raise the count
    assert limiter.acquire("search").wait_s > 0
    now[0] = 1031.5
    assert limiter.acquire("search") == Grant(1)  # token 1's window began again
    limiter.block(1, "search", 100)
    assert limiter.acquire("search").wait_s == pytest.approx(1060 + RESET_MARGIN_S - 1031.5)


def test_responses_are_classified_as_github_documents():
    now = 1000.0
    assert classify_response(200, {}, "", now).action == "ok"
    assert classify_response(302, {}, "", now).action == "ok"
    primary = classify_response(403, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1100"}, "", now)
    assert (primary.action, primary.wait_s) == ("rate_limited", 100 + RESET_MARGIN_S)
    assert classify_response(429, {"retry-after": "12"}, "", now).wait_s == 12
    assert classify_response(403, {}, "You have exceeded a secondary rate limit", now).wait_s == SECONDARY_LIMIT_WAIT_S
    assert classify_response(403, {"X-RateLimit-Remaining": "10", "X-RateLimit-Reset": "1100"},
                             "Resource not accessible by integration", now).action == "fail"
    assert classify_response(502, {}, "", now).action == "retry"
    assert classify_response(503, {"Retry-After": "30"}, "", now).wait_s == 30
    assert classify_response(404, {}, "Not Found", now).action == "fail"
    assert classify_response(422, {}, "Validation Failed", now).action == "fail"


# -- hostile servers (issue 10 item 8) -------------------------------------------------------------------------

class _OneAnswerServer(LoopbackHTTPServer):
    """A loopback HTTP server that gives every GET the same status, headers and body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes = b""):
        import http.server

        answer = (status, headers, body)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(answer[0])
                for key, value in answer[1].items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer[2])))
                self.end_headers()
                self.wfile.write(answer[2])

            def log_message(self, *args) -> None:
                pass

        super().__init__(Handler)


def _client(api_url: str):
    from codemill.crawl.sources.github_client import GithubClient
    from codemill.retry import Backoff

    return GithubClient(api_url, Tokens([]), RateLimiter(1), timeout_s=5, max_retries=0, backoff=Backoff(0.01, 0.01),
                        max_rate_limit_waits=0)


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/x"])
def test_redirects_to_other_schemes_are_not_followed(tmp_path, location):
    """A redirect to file:// was followed: urllib opened the local file and the crawl read it."""
    with _OneAnswerServer(302, {"Location": location}) as server:
        with pytest.raises(ApiError, match="not followed"):
            _client(server.url).get_text("/repos/o/r/commits/HEAD", "application/vnd.github.sha")


def test_redirects_to_plain_http_are_followed_only_when_the_api_is_http():
    from codemill.crawl.sources.github_client import _may_follow

    assert _may_follow("https://codeload.github.com/x", "https://api.github.com")
    assert not _may_follow("http://codeload.github.com/x", "https://api.github.com")
    assert _may_follow("http://127.0.0.1:9/x", "http://127.0.0.1:8")
    assert not _may_follow("file:///etc/passwd", "http://127.0.0.1:8")


def test_response_reads_are_bounded(monkeypatch):
    from codemill.crawl.sources import github_client

    monkeypatch.setattr(github_client, "MAX_JSON_BYTES", 1024)
    monkeypatch.setattr(github_client, "MAX_TEXT_BYTES", 64)
    with _OneAnswerServer(200, {"Content-Type": "application/json"}, b'{"items": [' + b"1," * 5000 + b"1]}") as big:
        with pytest.raises(ApiError, match="larger than 1024 bytes"):
            _client(big.url).get_json("/search/repositories")
        with pytest.raises(ApiError, match="larger than 64 bytes"):
            _client(big.url).get_text("/repos/o/r/commits/HEAD", "application/vnd.github.sha")
