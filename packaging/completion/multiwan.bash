# bash completion for multiwan(8)                        -*- shell-script -*-
#
# Self-contained (no bash-completion helpers needed). WAN names for `use`
# and `--down` come from the running daemon (`multiwan status --json`, which
# needs root to reach the control socket); without an answer only `auto` is
# offered.

# _multiwan_wans PROG [-c FILE]: the WAN names the daemon reports, one a line.
_multiwan_wans()
{
    local prog=$1
    shift
    # The first-level "name" keys of the objects in "wans" (status --json
    # is indented by two spaces a level; nested objects are deeper).
    timeout 2 "$prog" status --json "$@" </dev/null 2>/dev/null |
        awk '/^  "wans": \[/ { in_wans = 1; next }
             in_wans && /^  []}]/ { in_wans = 0 }
             in_wans && /^      "name": "/ {
                 sub(/^      "name": "/, ""); sub(/",?[[:space:]]*$/, ""); print }'
}

_multiwan()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local prog=${COMP_WORDS[0]} cmd="" i cfg=()
    local commands="check plan run status use reload events explain init import version help"

    # The command is the first word that is not a flag; -c FILE is kept
    # for asking the right daemon.
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            -c | --c) cfg=(-c "${COMP_WORDS[i+1]}") ; ((i++)) ;;
            -*) ;;
            *) [[ -z $cmd ]] && cmd=${COMP_WORDS[i]} ;;
        esac
    done

    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        return
    fi

    case $prev in
        -c | --c | -o | --o)
            compopt -o filenames 2>/dev/null
            COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
        --log-level | -log-level)
            COMPREPLY=($(compgen -W "debug info warn error" -- "$cur"))
            return ;;
        --down | -down)
            # a comma-separated list: complete the last element
            local done=${cur%"${cur##*,}"}
            COMPREPLY=($(compgen -P "$done" -W "$(_multiwan_wans "$prog" "${cfg[@]}")" -- "${cur##*,}"))
            compopt -o nospace 2>/dev/null
            return ;;
        --proto | -proto)
            COMPREPLY=($(compgen -W "tcp udp icmp icmpv6 sctp udplite" -- "$cur"))
            return ;;
        --iif | -iif)
            COMPREPLY=($(compgen -W "$(ls /sys/class/net 2>/dev/null)" -- "$cur"))
            return ;;
        --past | -past | --src | -src | --dst | -dst | --sport | -sport | --dport | -dport)
            return ;;
    esac

    local flags=""
    case $cmd in
        check | reload) flags="-c" ;;
        plan) flags="-c --down" ;;
        run) flags="-c --log-level" ;;
        status) flags="-c --json" ;;
        events) flags="-c --past --json" ;;
        explain) flags="-c --src --dst --proto --sport --dport --iif --local --offline --down --json" ;;
        init) flags="-o" ;;
        use)
            if [[ $cur != -* ]]; then
                COMPREPLY=($(compgen -W "auto $(_multiwan_wans "$prog" "${cfg[@]}")" -- "$cur"))
                return
            fi
            flags="-c" ;;
        import)
            if [[ $prev == import ]]; then
                COMPREPLY=($(compgen -W "mwan3" -- "$cur"))
            else
                compopt -o filenames 2>/dev/null
                COMPREPLY=($(compgen -f -- "$cur"))
            fi
            return ;;
        *) return ;;
    esac
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
}

complete -F _multiwan multiwan
