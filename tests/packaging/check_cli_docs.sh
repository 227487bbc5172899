#!/usr/bin/env bash
# Checks one of the command's documents against the command itself:
#   check_cli_docs.sh man  TIERLOCK docs/man/tierlock.1
#   check_cli_docs.sh bash TIERLOCK completions/tierlock.bash
#   check_cli_docs.sh zsh  TIERLOCK completions/_tierlock
#   check_cli_docs.sh fish TIERLOCK completions/tierlock.fish
# The subcommands and options are read from `TIERLOCK --help` and
# `TIERLOCK SUB --help` now, so a new option that the document lacks fails
# here. Prints "SKIPPED: <why>" (ctest's skip) when the shell is missing.
set -euo pipefail

kind=$1 tierlock=$2 doc=$3
fail() {
  echo "check_cli_docs: $doc: $*" >&2
  exit 1
}
[[ -x $tierlock ]] || fail "the command $tierlock is not an executable"
[[ -r $doc ]] || fail "cannot read it"

# "SUB OPTION" per line (SUB '-' for tierlock's own options), and the
# subcommands, from CLI11's help: "  -s,--shared  ..." under "Options:",
# "  run  ..." under "Subcommands:".
help_section() {  # help_section SECTION < help: the first column of its entries
  awk -v want="$1" '
    /^[A-Z][A-Za-z ]*:$/ { section = $0; next }
    section == want && /^  [^ ]/ { print $1 }'
}
top_help=$("$tierlock" --help) || fail "$tierlock --help failed"
mapfile -t subcommands < <(help_section "Subcommands:" <<<"$top_help")
((${#subcommands[@]} > 0)) || fail "no subcommands in $tierlock --help"
items=()
add_options() {  # add_options SUB < help
  local entry word
  while read -r entry; do
    IFS=, read -r -a words <<<"$entry"
    for word in "${words[@]}"; do
      [[ $word == -* ]] && items+=("$1 $word")
    done
  done < <(help_section "Options:")
}
add_options - <<<"$top_help"
for sub in "${subcommands[@]}"; do
  sub_help=$("$tierlock" "$sub" --help) || fail "$tierlock $sub --help failed"
  add_options "$sub" <<<"$sub_help"
done
echo "from --help: subcommands ${subcommands[*]}; ${#items[@]} options"

# Whole-word match of an option or name in text (a hyphen is part of a word).
contains_word() {  # contains_word WORD < text
  grep -qE -- "(^|[^A-Za-z0-9_-])$(sed 's/[][\.*^$+?(){}|/]/\\&/g' <<<"$1")([^A-Za-z0-9_-]|\$)"
}

missing=()
case $kind in
  man)
    # Warnings are errors: groff's (-ww) and man's.
    warnings=$(groff -mandoc -Tutf8 -ww -z "$doc" 2>&1) || fail "groff failed: $warnings"
    [[ -z $warnings ]] || fail "groff -ww warnings: $warnings"
    text=$(LC_ALL=C MANWIDTH=200 man -l "$doc" 2>"${TMPDIR:-/tmp}/tierlock-man-$$.err") ||
      fail "man -l failed: $(cat "${TMPDIR:-/tmp}/tierlock-man-$$.err")"
    warnings=$(cat "${TMPDIR:-/tmp}/tierlock-man-$$.err")
    rm -f "${TMPDIR:-/tmp}/tierlock-man-$$.err"
    [[ -z $warnings ]] || fail "man -l warnings: $warnings"
    for sub in "${subcommands[@]}"; do
      contains_word "tierlock $sub" <<<"$text" || missing+=("subcommand $sub")
    done
    for item in "${items[@]}"; do
      contains_word "${item#* }" <<<"$text" || missing+=("${item% *} option ${item#* }")
    done
    ;;
  bash)
    # As a user's shell would: source it, then ask for the options.
    out=$(bash --norc --noprofile -c 'source "$1" && complete -p tierlock' _ "$doc") ||
      fail "bash could not source it or it registered no completion for tierlock: $out"
    [[ $out == *"-F _tierlock tierlock"* ]] || fail "complete -p tierlock says: $out"
    complete_words() {  # complete_words WORD...: the completions of that line
      bash --norc --noprofile -c '
        source "$1"; shift
        COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=()
        _tierlock tierlock "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
        printf "%s\n" "${COMPREPLY[@]}"' _ "$doc" "$@"
    }
    offered=$(complete_words tierlock "")
    for sub in "${subcommands[@]}"; do
      contains_word "$sub" <<<"$offered" || missing+=("subcommand $sub")
    done
    for item in "${items[@]}"; do
      sub=${item% *} option=${item#* }
      if [[ $sub == - ]]; then
        offered=$(complete_words tierlock -)
      else
        offered=$(complete_words tierlock "$sub" -)
      fi
      contains_word "$option" <<<"$offered" || missing+=("$sub option $option")
    done
    ;;
  fish)
    command -v fish >/dev/null || { echo "SKIPPED: fish is not installed"; exit 0; }
    fish --no-execute "$doc" || fail "fish --no-execute: syntax errors above"
    complete_line() {  # complete_line LINE: the completions fish offers
      HOME=${TMPDIR:-/tmp} fish --no-config -c 'source $argv[1]; complete -C"$argv[2]"' "$doc" "$1" |
        cut -f1
    }
    offered=$(complete_line "tierlock ")
    for sub in "${subcommands[@]}"; do
      contains_word "$sub" <<<"$offered" || missing+=("subcommand $sub")
    done
    for item in "${items[@]}"; do
      sub=${item% *} option=${item#* }
      prefix="tierlock "
      [[ $sub == - ]] || prefix+="$sub "
      # fish offers short options only once a single - is typed
      offered=$(complete_line "$prefix-"; complete_line "$prefix--")
      contains_word "$option" <<<"$offered" || missing+=("$sub option $option")
    done
    ;;
  zsh)
    # zsh's completion system needs a terminal to run; check the syntax
    # and that every option and subcommand is named in an _arguments spec.
    command -v zsh >/dev/null || { echo "SKIPPED: zsh is not installed"; exit 0; }
    zsh --no-rcs -n "$doc" || fail "zsh -n: syntax errors above"
    [[ $(head -n1 "$doc") == "#compdef tierlock" ]] || fail "the first line is not '#compdef tierlock'"
    source_text=$(<"$doc")
    for sub in "${subcommands[@]}"; do
      grep -qE "^ *'$sub:" <<<"$source_text" || missing+=("subcommand $sub")
    done
    for item in "${items[@]}"; do
      contains_word "${item#* }" <<<"$source_text" || missing+=("${item% *} option ${item#* }")
    done
    ;;
  *) fail "unknown kind '$kind' (man, bash, zsh, fish)" ;;
esac

if ((${#missing[@]} > 0)); then
  printf -v list '\n  %s' "${missing[@]}"
  fail "lacks what \`tierlock --help\` lists (add it):$list"
fi
echo "check_cli_docs: $doc: covers ${#subcommands[@]} subcommands and ${#items[@]} options"
