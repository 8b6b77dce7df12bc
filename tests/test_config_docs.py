"""docs/configuration.md's key tables are the ones the declarations generate, so they can never drift."""

from pathlib import Path

from webhook.config import Config
from webhook.config.declare import declared_keys, yaml_name
from webhook.config.docs import BEGIN, END, generated_block, render, replace_block

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_the_key_tables_in_the_docs_are_the_generated_ones():
    written = generated_block(DOC.read_text(encoding="utf-8"))
    assert written == render().strip("\n"), (
        "docs/configuration.md is out of date: run `python -m webhook.config.docs --write docs/configuration.md`"
    )


def test_every_declared_key_has_a_row_with_its_full_path():
    tables = render()
    for field, declared in declared_keys(Config):
        section = yaml_name(field, declared)
        assert f"### `{section}" in tables
    for path in ("webhook.listen", "webhook.maxRequestBytes", "upstreams[].redirectHosts", "retention.maxUnusedAge"):
        assert f"| `{path}` |" in tables
    for path in ("retention.rules[].keep", "retention.rules[].maxUnusedAge"):  # a list of sections inside a section
        assert f"| `{path}` |" in tables


def test_writing_replaces_only_the_generated_part():
    document = f"# Title\n\nprose before\n\n{BEGIN}\nold table\n{END}\n\nafter\n"
    updated = replace_block(document, "new table")
    assert updated == f"# Title\n\nprose before\n\n{BEGIN}\nnew table\n{END}\n\nafter\n"
    assert generated_block(updated) == "new table"
