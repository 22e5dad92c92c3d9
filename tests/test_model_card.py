"""MODEL.md keeps user strings (run name, data set, latency device) literal: parsed as Markdown,
each stays inside its own code span or text, a table keeps its cells, and no HTML gets through."""
import pytest
import yaml
from markdown_it import MarkdownIt

from cspnas.results.export import export_trial
from cspnas.run_format import load_run
from run_fixture import make_run

NASTY = "x`` `y | z\n# not a heading <img src=x onerror=alert(1)> *b* [l](http://e) &amp;"
ONE_LINE = NASTY.replace("\n", "\\n")  # how the card shows the newline


@pytest.fixture(scope="module")
def card(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("card")
    run = make_run(tmp, 4, max_macs=1e12)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config.update(name=NASTY, dataset=NASTY)  # Run.setting reads the top level first
    config["latency"]["device"] = NASTY
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    export_trial(load_run(run), tmp / "out", formats=("json",))
    return (tmp / "out" / "MODEL.md").read_text()


def _tokens(card: str):
    return MarkdownIt("commonmark").enable("table").parse(card)


def _inline_children(tokens):
    return [c for t in tokens if t.type == "inline" for c in t.children]


def test_no_html_and_no_markup_escapes_from_user_strings(card):
    tokens = _tokens(card)
    kinds = {t.type for t in tokens} | {c.type for c in _inline_children(tokens)}
    assert not kinds & {"html_inline", "html_block"}, kinds
    assert not kinds & {"link_open", "em_open", "image"}, kinds
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert sum(h.startswith("cspnas model") for h in headings) == 1
    assert not any("not a heading" in h and not h.startswith("cspnas model") for h in headings)


def test_run_name_is_one_code_span_in_the_title(card):
    tokens = _tokens(card)
    title = next(tokens[i + 1] for i, t in enumerate(tokens) if t.type == "heading_open" and t.tag == "h1")
    spans = [c.content for c in title.children if c.type == "code_inline"]
    assert spans == [ONE_LINE]


def test_table_rows_keep_three_cells_and_the_data_set_its_code_span(card):
    tokens = _tokens(card)
    rows, cells = [], 0
    for t in tokens:
        if t.type == "tr_open":
            cells = 0
        elif t.type in ("td_open", "th_open"):
            cells += 1
        elif t.type == "tr_close":
            rows.append(cells)
    assert len(rows) == 5 and set(rows) == {3}, rows
    spans = [c.content for c in _inline_children(tokens) if c.type == "code_inline"]
    assert spans.count(ONE_LINE) >= 3  # title, validation row, inputs paragraph
    # the latency device is plain text in its cell, verbatim
    texts = "".join(c.content for c in _inline_children(tokens) if c.type == "text")
    assert f"eager mode on {ONE_LINE}, batch" in texts


def test_python_snippet_quotes_the_data_set(card):
    code = next(t.content for t in _tokens(card) if t.type == "fence" and "load_dataset" in t.content)
    line = next(s for s in code.splitlines() if s.startswith("data = load_dataset("))
    compile(line, "MODEL.md", "exec")  # a valid statement: the name cannot end the string early
    assert eval(line.split("=", 1)[1].strip().removeprefix("load_dataset(").removesuffix(")")) == NASTY
