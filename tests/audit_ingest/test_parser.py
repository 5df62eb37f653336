"""The condition grammar, checked against the cases the reference ran through libs 0.21.0's parser."""

from __future__ import annotations

import pytest

from edgeguard.falco.parser import ParseError, parse, parse_field, substitute_list, to_text


def F(name, arg=None):
    return ("field", name, arg)


def V(v):
    return ("value", v)


@pytest.mark.parametrize(
    "text,expected",
    [
        ('a.b = "a\\ b"', ("check", F("a.b"), "=", V("a\\b"))),
        ("a.b = 'it\\'s'", ("check", F("a.b"), "=", V("it's"))),
        ("a.b existsand c", ("and", [("check", F("a.b"), "exists", None), ("id", "c")])),
        ("a.b containsin (x)", ("check", F("a.b"), "in", ("list", ["x"]))),
        (
            "a.a=1 or b.b=2 and c",
            ("or", [("check", F("a.a"), "=", V("1")), ("and", [("check", F("b.b"), "=", V("2")), ("id", "c")])]),
        ),
        ("not a.b = 1 and c", ("and", [("not", ("check", F("a.b"), "=", V("1"))), ("id", "c")])),
        ("a.b in x", ("check", F("a.b"), "in", ("list", ["x"]))),
        ("a.b in (x, 'y z', \"q\", 1)", ("check", F("a.b"), "in", ("list", ["x", "y z", "q", "1"]))),
        ("a.b = c.d", ("check", F("a.b"), "=", V("c.d"))),
        ("a.b > 1.5", ("check", F("a.b"), ">", V("1.5"))),
        ("a.b = val(c.d)", ("check", F("a.b"), "=", ("val", F("c.d")))),
        ("a.b in tolower(c.d)", ("check", F("a.b"), "in", ("xf", "tolower", F("c.d")))),
        ("tolower(a.b) = x", ("check", ("xf", "tolower", F("a.b")), "=", V("x"))),
        ("a.b startswith /healthz?", ("check", F("a.b"), "startswith", V("/healthz?"))),
        (
            "jevt.value[/stage] in (ResponseComplete)",
            ("check", F("jevt.value", "/stage"), "in", ("list", ["ResponseComplete"])),
        ),
        ('ka.uri.param["a b"] = x', ("check", F("ka.uri.param", "a b"), "=", V("x"))),
        ("a.b icontains 'A'", ("check", F("a.b"), "icontains", V("A"))),
        ("(a.b = 1)and(c)", ("and", [("check", F("a.b"), "=", V("1")), ("id", "c")])),
        ("a and not(b)", ("and", [("id", "a"), ("not", ("id", "b"))])),
        ("ka.verb=create", ("check", F("ka.verb"), "=", V("create"))),
        ("a.b = not", ("check", F("a.b"), "=", V("not"))),
        ("not not a", ("id", "a")),
        ("notb", ("id", "notb")),
        ("a.b in ()", ("check", F("a.b"), "in", ("list", []))),
        ("len(ka.user.groups) > 0x10", ("check", ("xf", "len", F("ka.user.groups")), ">", V("0x10"))),
        ("toupper(tolower(a.b)) = X", ("check", ("xf", "toupper", ("xf", "tolower", F("a.b"))), "=", V("X"))),
        (
            "ka.req.pod.containers.image[0] in (nginx)",
            ("check", F("ka.req.pod.containers.image", "0"), "in", ("list", ["nginx"])),
        ),
        ('a.b = "tab\\there"', ("check", F("a.b"), "=", V("tab\there"))),
    ],
)
def test_parses_like_libs_0_21(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize(
    "text,message,index",
    [
        ('a.b = "x\\\\"', "expected a string value or a field with a valid transformer", 6),
        ('a.b = "x\\\\" or c.d = "y"', "unexpected token after 'x\\\" or c.d = ', expecting 'or', 'and'", 22),
        ('a.b contains"x"', "expected a valid check operator", 12),
        ("a.b > abc", "expected a number value or a field with a valid transformer", 6),
        ("a.b=c,d", "unexpected token after 'c', expecting 'or', 'and'", 5),
        ("a.b = x and", "expected blank or '(' after 'and'", 11),
        ('a.b = "\\x41"', "unsupported string escape sequence: \\x", 12),
        ("", "filter input string is empty", 0),
        ("a andb", "expected blank or '(' after 'and'", 5),
        ("(a.b = 1", "expected a ')' token", 8),
        ("a.b in (x,)", "expected a list value", 10),
    ],
)
def test_rejects_like_libs_0_21(text, message, index):
    with pytest.raises(ParseError) as exc:
        parse(text)
    assert message in exc.value.msg
    assert exc.value.pos == index


def test_quirk_word_operator_without_blank_falls_through_to_list_operators():
    # libs 0.21 consumes "contains" and, finding no blank, tries the list operators at the advanced cursor.
    assert parse("a.b containsin (x)") == parse("a.b in (x)")


def test_quirk_backslash_space_escape_yields_a_lone_backslash():
    assert parse('a.b = "C:\\ dir"')[3] == V("C:\\dir")


def test_quirk_exists_needs_no_following_blank():
    assert to_text(parse("x.y existsand z")) == "(x.y exists and z)"


def test_or_binds_looser_than_and_and_appends_are_textual():
    # "A or B" + " and not C" as text is "A or (B and not C)", not "(A or B) and not C".
    assert to_text(parse("x.a = 1 or x.b = 2 and not x.c = 3")) == "(x.a = 1 or (x.b = 2 and not x.c = 3))"


def test_deep_nesting_is_an_error_not_a_crash():
    with pytest.raises(ParseError):
        parse("(" * 1200 + "a" + ")" * 1200)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("ka.user.name", ("field", "ka.user.name", None)),
        ("ka.req.pod.volumes.hostpath[/var]", ("field", "ka.req.pod.volumes.hostpath", "/var")),
        ("tolower(ka.verb)", ("xf", "tolower", ("field", "ka.verb", None))),
        ("ka.verb extra", None),  # more after the field
        ("verb", None),  # an identifier, not a field
        ("", None),
    ],
)
def test_parse_field_reads_one_whole_field(text, expected):
    assert parse_field(text) == expected


def test_parse_field_malformed_argument_is_a_parse_error():
    with pytest.raises(ParseError):
        parse_field("ka.x[")


# ---- textual list substitution (rule_loader_compiler.cpp::resolve_list) ------------------------------
@pytest.mark.parametrize(
    "cond,items,expected",
    [
        ("x in (my_list)", ["a", "b"], "x in ( a, b )"),
        ("x in my_list", ["a", "b"], "x in a, b "),
        ("x in (a, my_list)", [], "x in (a  )"),  # empty list: the comma before it goes
        ("x in (my_list, a)", [], "x in (   a)"),  # ... else the comma after it
        ("x in (my_list_2)", ["a"], "x in (my_list_2)"),  # not bounded by delimiters: untouched
        ("x in (my_list)", ["has space", '"q x"'], 'x in ( "has space", "q x" )'),
        ('x = "a my_list b"', ["z"], 'x = "a z b"'),  # context-free: even inside quotes
        ("my_list", ["a"], "a "),
    ],
)
def test_list_substitution_is_textual_like_falco(cond, items, expected):
    assert substitute_list(cond, "my_list", items)[0] == expected
