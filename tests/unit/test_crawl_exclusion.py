"""The exclusion list (The Pile, CodeParrot) in every spelling it comes in."""

from __future__ import annotations


def test_exclusion_list_forms(tmp_path):
    """The Pile / CodeParrot lists come as names or URLs, with comments; any spelling matches."""
    from codemill.crawl.selection import SelectionConfig, load_exclusions, rejection_reason
    from codemill.crawl.sources.base import RepoRef

    listing = tmp_path / "pile_and_codeparrot.txt"
    listing.write_text("# repositories already in The Pile\nOWNER/One\n\nhttps://github.com/owner/two.git\n"
                       "owner/three  # CodeParrot\n")
    cfg = SelectionConfig(exclude=["Owner/Four"], exclude_file=str(listing))
    excluded = load_exclusions(cfg)
    assert excluded == {"owner/one", "owner/two", "owner/three", "owner/four"}
    ref = RepoRef("owner/TWO", "github", "", stars=5, size_kb=10)
    assert rejection_reason(ref, cfg, excluded) == "excluded"
    assert rejection_reason(RepoRef("owner/five", "github", "", stars=0, size_kb=10), cfg, excluded) == "stars<1"
    assert rejection_reason(RepoRef("owner/six", "github", "", stars=1, size_kb=10241), cfg, excluded) == "size>10240KB"
    assert rejection_reason(RepoRef("owner/seven", "github", "", stars=1, size_kb=10240), cfg, excluded) is None
