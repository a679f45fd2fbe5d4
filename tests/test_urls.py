"""cloudwds.urls: URL specs, rewrites and schemes (pure functions)."""

from __future__ import annotations

import pathlib
import re

import pytest

from cloudwds import urls


def test_brace_expansion():
    assert urls.expand_urls("s-{000..003}.tar") == [f"s-{i:03d}.tar" for i in range(4)]
    assert urls.expand_urls("{a,b}/x-{0..1}.tar") == [
        "a/x-0.tar",
        "a/x-1.tar",
        "b/x-0.tar",
        "b/x-1.tar",
    ]
    assert urls.expand_urls("plain.tar") == ["plain.tar"]


def test_double_colon_lists_and_python_lists():
    assert urls.expand_urls("a-{0..1}.tar::b.tar") == ["a-0.tar", "a-1.tar", "b.tar"]
    assert urls.expand_urls("a.tar::::b.tar") == ["a.tar", "b.tar"]  # empty parts dropped
    assert urls.expand_urls(["x-{1..2}.tar", "y.tar"]) == ["x-1.tar", "x-2.tar", "y.tar"]
    assert urls.expand_urls(iter(["z.tar"])) == ["z.tar"]
    assert urls.expand_urls([]) == []


def test_pathlike_and_non_strings():
    assert urls.expand_urls(pathlib.Path("/d/s-{0..1}.tar")) == ["/d/s-0.tar", "/d/s-1.tar"]
    assert urls.expand_urls([pathlib.Path("/d/a.tar")]) == ["/d/a.tar"]
    with pytest.raises(TypeError, match="must be a string"):
        urls.expand_urls([1, 2])


def test_pipe_specs_are_expanded_as_a_whole():
    assert urls.expand_urls("pipe:cat s-{0..1}.tar") == ["pipe:cat s-0.tar", "pipe:cat s-1.tar"]


def test_parse_rewrites():
    rules = urls.parse_rewrites("gs://=/data/; s3://b/=pipe:curl -H a=b http://x/")
    assert rules == (
        urls.Rewrite("gs://", "/data/"),
        urls.Rewrite(" s3://b/", "pipe:curl -H a=b http://x/"),
    )
    assert urls.parse_rewrites("a=b;;") == (urls.Rewrite("a", "b"),)
    with pytest.raises(ValueError, match="no '='"):
        urls.parse_rewrites("nonsense")
    with pytest.raises(re.error):
        urls.parse_rewrites("(unclosed=x")


def test_apply_rewrites_first_match_wins_and_groups():
    rules = (
        urls.Rewrite(r"^gs://([^/]+)/", r"/mnt/\1/"),
        urls.Rewrite(r"^gs://", "never"),
    )
    assert urls.apply_rewrites("gs://bucket/a.tar", rules) == "/mnt/bucket/a.tar"
    assert urls.apply_rewrites("s3://bucket/a.tar", rules) == "s3://bucket/a.tar"
    assert urls.apply_rewrites("x", ()) == "x"
    # only the first occurrence is replaced
    assert urls.Rewrite("a", "b").apply("aaa") == "baa"
    assert urls.Rewrite("zzz", "b").apply("aaa") is None


def test_rewrites_from_env_and_set_rewrites():
    env = {"WDS_REWRITE": "a=b", "GOPEN_REWRITE": "c=d"}
    assert urls.rewrites_from_env(env) == (urls.Rewrite("a", "b"), urls.Rewrite("c", "d"))
    assert urls.rewrites_from_env({}) == ()
    try:
        urls.set_rewrites([("x", "y")])
        assert urls.rewrites_from_env(env)[0] == urls.Rewrite("x", "y")
        urls.set_rewrites("p=q;r=s")
        assert urls.rewrites_from_env({}) == (urls.Rewrite("p", "q"), urls.Rewrite("r", "s"))
    finally:
        urls.set_rewrites(None)
    assert urls.rewrites_from_env({}) == ()


@pytest.mark.parametrize(
    "url,scheme",
    [
        ("/data/a.tar", ""),
        ("relative/a.tar", ""),
        ("-", ""),
        ("pipe:curl -s http://x/a.tar", "pipe"),
        ("file:/data/a.tar", "file"),
        ("file:///data/a.tar", "file"),
        ("S3://Bucket/a.tar", "s3"),
        ("gs://b/a.tar", "gs"),
        ("https://host/a.tar", "https"),
        ("ais://b/a.tar", "ais"),
    ],
)
def test_url_scheme(url, scheme):
    assert urls.url_scheme(url) == scheme
