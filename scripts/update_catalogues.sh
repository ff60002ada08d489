#!/usr/bin/env bash
# Re-extract the hub's texts (babel.cfg) into hub/locale/hub.pot and bring the German and
# English catalogues up to date with it: new texts come in untranslated, texts gone from the
# code are dropped. Then translate what is new in both .po files (the .po files are the
# source of truth; hub/i18n.py compiles them at run time) and run tests/unit/test_i18n.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYBABEL="${PYBABEL:-.venv/bin/pybabel}"
LOCALE_DIR=hub/locale
POT="$LOCALE_DIR/hub.pot"

"$PYBABEL" --quiet extract --mapping-file babel.cfg --output-file "$POT" \
    --project "Matrix Commerce Hub" --version 0.1.0 \
    --copyright-holder "Matrix Commerce Hub contributors" \
    --add-location file --width 100 --sort-by-file --no-default-keywords \
    --keywords _ --keywords N_ --keywords ngettext:1,2 --add-comments TRANSLATORS: --strip-comment-tags \
    .

for language in de en; do
    po="$LOCALE_DIR/$language/LC_MESSAGES/hub.po"
    if [ -f "$po" ]; then
        "$PYBABEL" --quiet update --input-file "$POT" --output-file "$po" --locale "$language" \
            --domain hub --width 100 --ignore-obsolete --no-fuzzy-matching
    else
        "$PYBABEL" --quiet init --input-file "$POT" --output-file "$po" --locale "$language" \
            --domain hub --width 100
    fi
done

# What is still to translate (an empty msgstr), per catalogue.
for language in de en; do
    po="$LOCALE_DIR/$language/LC_MESSAGES/hub.po"
    missing=$(PO="$po" .venv/bin/python - <<'PY'
import os
from babel.messages.pofile import read_po
with open(os.environ["PO"], "rb") as fp:
    catalog = read_po(fp)
print(sum(1 for m in catalog if m.id and not (m.string if isinstance(m.string, str) else all(m.string))))
PY
)
    echo "$po: $missing message(s) to translate"
done
