from minimoe.data.text import split_sentences, strip_wikitext


def test_split_sentences_keeps_abbreviations_initials_and_quotes():
    text = 'Dr. Smith met J. R. R. Tolkien in the U.S. in 1950. He said "Hello!" Then they left? Yes. e.g. this stays.'
    assert split_sentences(text) == [
        "Dr. Smith met J. R. R. Tolkien in the U.S. in 1950.",
        'He said "Hello!"',
        "Then they left?",
        "Yes. e.g. this stays.",
    ]


def test_split_sentences_needs_a_capital_after_the_stop():
    assert split_sentences("Version 2.5 is out. it is lower case. 3 items follow.") == [
        "Version 2.5 is out. it is lower case.",
        "3 items follow.",
    ]
    assert split_sentences("  ") == []


WIKITEXT = """{{Infobox person|name=Ada {{nowrap|Lovelace}}|image=Ada.jpg}}
'''Ada Lovelace''' (born {{birth date|1815|12|10}}) was an English [[mathematician]] and
[[Writer|writer]].<ref name="a">{{cite book|title=X}}</ref> She worked on the [[Analytical Engine]].<ref>Plain ref.</ref>
[[File:Ada.jpg|thumb|Ada, by [[Alfred Chalon]]]]
Her tutor was named Helius ({{IPAc-en|h|iː}}; {{lang-grc|Ἥλιος}}, Helios).
<!-- a hidden comment -->
== Early life ==
She was born in [[London]] &ndash; see [http://example.org the site].
{| class="wikitable"
| cell || {{flag|UK}}
|}
* a list item that is dropped
[[Category:Mathematicians]]
== References ==
{{reflist}}
Text after references is dropped.
"""


def test_strip_wikitext_keeps_prose_only():
    assert strip_wikitext(WIKITEXT) == [
        "Ada Lovelace was an English mathematician and",
        "writer. She worked on the Analytical Engine.",
        "Her tutor was named Helius (Helios).",
        "She was born in London – see the site.",
    ]
