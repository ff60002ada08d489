from hub.core.text import storable


def test_storable_keeps_real_text_and_repairs_broken() -> None:
    assert storable("Grüße 🎨 مرحبا e\u0301") == "Grüße 🎨 مرحبا e\u0301"
    assert storable("a\ud800b\x00c") == "a\ufffdbc"
    assert storable("a\ud800b").encode("utf-8") == "a\ufffdb".encode()
