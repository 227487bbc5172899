# bash completion for tierlock(1); installed as
# share/bash-completion/completions/tierlock (loaded on demand by
# bash-completion) and usable without it: `source` this file.
#
# `tierlock run`'s options end at DIR (or, with --backend, at the command),
# so the words after it are completed as a command line of its own.

_tierlock() {
  local cur=${COMP_WORDS[COMP_CWORD]}
  local prev=${COMP_WORDS[COMP_CWORD - 1]}
  local sub="" sub_at=0 i
  for ((i = 1; i < COMP_CWORD; i++)); do
    case ${COMP_WORDS[i]} in
      -*) ;;
      *) sub=${COMP_WORDS[i]} sub_at=$i; break ;;
    esac
  done

  if [[ -z $sub ]]; then
    case $cur in
      -*) COMPREPLY=($(compgen -W '-h --help --version' -- "$cur")) ;;
      *) COMPREPLY=($(compgen -W 'run status lock version' -- "$cur")) ;;
    esac
    return 0
  fi

  local run_opts='-h --help -s --shared -n --no-wait -w --timeout
    -E --conflict-exit-code --tier --lock-name --create -o --close
    --refuse-unsafe -c --command --reentrant --verbose -q --quiet
    --backend --key --ttl --kill-after'
  local status_opts='-h --help --json --lock-name --backend --key'
  local lock_opts='-h --help --fd -s --shared -u --unlock -n --no-wait
    -w --timeout -E --conflict-exit-code --verbose -q --quiet'

  case $sub in
    run)
      # The word where the command starts, once tierlock's own words end.
      local backend="" dir_at=0 cmd_at=0 shell_cmd="" w
      for ((i = sub_at + 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        if ((dir_at > 0)); then
          # One `--` right after DIR is dropped.
          if [[ $w == -- && i -eq dir_at+1 ]]; then cmd_at=$((i + 1)); else cmd_at=$i; fi
          break
        fi
        case $w in
          --) if [[ -n $backend ]]; then cmd_at=$((i + 1)); break; fi ;;
          --backend) backend=1; ((i++)) ;;
          --backend=*) backend=1 ;;
          -w | --timeout | -E | --conflict-exit-code | --tier | --lock-name | --key | --ttl | --kill-after) ((i++)) ;;
          -c | --command) shell_cmd=1; ((i++)) ;;
          -*) ;;
          *)
            if [[ -n $backend ]]; then cmd_at=$i; break; fi
            dir_at=$i
            ;;
        esac
      done
      # -c STRING: the shell string is the command; nothing follows DIR.
      if [[ -n $shell_cmd ]] && ((dir_at > 0)); then return 0; fi
      if ((cmd_at == 0 && dir_at > 0)); then cmd_at=$COMP_CWORD; fi
      if ((cmd_at > 0 && COMP_CWORD >= cmd_at)); then
        if [[ $cur == -- && COMP_CWORD -eq cmd_at && dir_at -gt 0 ]]; then
          return 0
        fi
        if declare -F _command_offset >/dev/null; then
          _command_offset "$cmd_at"  # bash-completion: the command's own completion
        elif ((COMP_CWORD == cmd_at)); then
          COMPREPLY=($(compgen -c -- "$cur"))
        else
          compopt -o filenames 2>/dev/null
          COMPREPLY=($(compgen -f -- "$cur"))
        fi
        return 0
      fi
      case $prev in
        --backend)
          compopt -o nospace 2>/dev/null
          COMPREPLY=($(compgen -W 'postgres:// postgresql:// postgres+advisory:// redis:// sqlite: etcd://' -- "$cur"))
          return 0
          ;;
        -w | --timeout | -E | --conflict-exit-code | --tier | --lock-name | --key | --ttl | --kill-after | -c | --command)
          return 0  # a value: nothing to offer
          ;;
      esac
      if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$run_opts" -- "$cur"))
      elif [[ -n $backend ]]; then
        COMPREPLY=($(compgen -c -- "$cur"))
      else
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -d -- "$cur"))
      fi
      ;;
    lock)
      case $prev in
        --fd | -w | --timeout | -E | --conflict-exit-code) return 0 ;;
      esac
      COMPREPLY=($(compgen -W "$lock_opts" -- "$cur"))
      ;;
    version)
      COMPREPLY=($(compgen -W '-h --help' -- "$cur"))
      ;;
    status)
      if [[ $prev == --lock-name || $prev == --backend || $prev == --key ]]; then
        return 0
      fi
      if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$status_opts" -- "$cur"))
      else
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -d -- "$cur"))
      fi
      ;;
  esac
  return 0
}
complete -F _tierlock tierlock
