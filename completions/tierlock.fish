# fish completion for tierlock(1); installed as
# share/fish/vendor_completions.d/tierlock.fish.
#
# `tierlock run`'s options end at DIR (or, with --backend, at the command),
# so the words after it are completed as a command line of its own.

set -l subcommands run status lock version

# The operands typed so far after `tierlock run`'s options (DIR and the
# command's words), skipping option values; prints one per line.
function __tierlock_run_operands
    set -l words (commandline -opc)
    set -e words[1] # tierlock
    while set -q words[1]; and string match -q -- '-*' $words[1]
        set -e words[1]
    end
    set -e words[1] # run
    set -l operands
    while set -q words[1]
        switch $words[1]
            case -w --timeout -E --conflict-exit-code --tier --lock-name --backend --key --ttl --kill-after -c --command
                set -e words[1]
            case '-*'
                if set -q operands[1]
                    set -a operands $words[1]
                end
            case '*'
                set -a operands $words[1]
        end
        set -e words[1]
    end
    string join \n -- $operands
end

function __tierlock_run_with_backend
    string match -q -r -- '^--backend(=|$)' (commandline -opc)
end

# The word being typed is an option's value (fish offers the option's own -a).
function __tierlock_run_wants_value
    contains -- (commandline -opc)[-1] -w --timeout -E --conflict-exit-code --tier --lock-name --backend --key --ttl --kill-after -c --command
end

# DIR is next (or, with --backend, the command).
function __tierlock_run_wants_dir
    __fish_seen_subcommand_from run; or return 1
    __tierlock_run_wants_value; and return 1
    __tierlock_run_with_backend; and return 1
    test (count (__tierlock_run_operands)) -eq 0
end

# The command's words: complete them as a command line of their own.
function __tierlock_run_in_command
    __fish_seen_subcommand_from run; or return 1
    __tierlock_run_wants_value; and return 1
    set -l n (count (__tierlock_run_operands))
    if __tierlock_run_with_backend
        test $n -ge 0
    else
        test $n -ge 1
    end
end

function __tierlock_run_command_line
    set -l operands (__tierlock_run_operands)
    if not __tierlock_run_with_backend
        set -e operands[1] # DIR
    end
    if test "$operands[1]" = --
        set -e operands[1]
    end
    __fish_complete_subcommand --commandline (string join ' ' -- $operands (commandline -ct))
end

complete -c tierlock -f
complete -c tierlock -n "not __fish_seen_subcommand_from $subcommands" -s h -l help -d 'Print help and exit'
complete -c tierlock -n "not __fish_seen_subcommand_from $subcommands" -a run -d 'Run a command under a directory lock (or a lease)'
complete -c tierlock -n "not __fish_seen_subcommand_from $subcommands" -l version -d 'Print the version and exit'
complete -c tierlock -n "not __fish_seen_subcommand_from $subcommands" -a status -d 'Show whether a lock is free or held, and by whom'
complete -c tierlock -n "not __fish_seen_subcommand_from $subcommands" -a lock -d 'Lock a descriptor the shell opened, as flock N'
complete -c tierlock -n "not __fish_seen_subcommand_from $subcommands" -a version -d 'Show the version and the build\'s options'

# tierlock run: options until DIR
set -l run_opts '__fish_seen_subcommand_from run; and not __tierlock_run_in_command'
complete -c tierlock -n $run_opts -s h -l help -d 'Print help and exit'
complete -c tierlock -n $run_opts -s s -l shared -d 'Take a shared lock'
complete -c tierlock -n $run_opts -s n -l no-wait -d 'Exit at once if the lock is held'
complete -c tierlock -n $run_opts -s w -l timeout -x -d 'Give up after SECONDS with the conflict code'
complete -c tierlock -n $run_opts -s E -l conflict-exit-code -x -d 'Exit code when the lock is held (default 75)'
complete -c tierlock -n $run_opts -l tier -x -d 'The lock\'s tier: LEVEL[:NAME]'
complete -c tierlock -n $run_opts -l lock-name -x -d 'The lock file\'s name inside DIR'
complete -c tierlock -n $run_opts -l create -d 'Create DIR if it is missing'
complete -c tierlock -n $run_opts -s o -l close -d 'The command does not inherit the lock\'s descriptor'
complete -c tierlock -n $run_opts -l refuse-unsafe -d 'Refuse a lock file another user could replace'
complete -c tierlock -n $run_opts -s c -l command -x -d 'Run STRING with /bin/sh -c, as flock -c'
complete -c tierlock -n $run_opts -l reentrant -d 'Run under an ancestor run\'s hold of this lock'
complete -c tierlock -n $run_opts -l verbose -d 'Say who held the lock, how long the wait took, the release'
complete -c tierlock -n $run_opts -s q -l quiet -d 'No waiting, conflict or unsafe-lock-file message'
complete -c tierlock -n $run_opts -l backend -x -a 'postgres:// postgresql:// postgres+advisory:// redis:// sqlite: etcd://' -d 'Hold a lease through a service instead'
complete -c tierlock -n $run_opts -l key -x -d 'The lease\'s key'
complete -c tierlock -n $run_opts -l ttl -x -d 'The lease\'s time to live (seconds)'
complete -c tierlock -n $run_opts -l kill-after -x -d 'Grace between SIGTERM and SIGKILL when the lease is lost'
complete -c tierlock -n __tierlock_run_wants_dir -x -a '(__fish_complete_directories)'
complete -c tierlock -n __tierlock_run_in_command -x -a '(__tierlock_run_command_line)'

# tierlock status
set -l status_opts '__fish_seen_subcommand_from status'
complete -c tierlock -n $status_opts -s h -l help -d 'Print help and exit'
complete -c tierlock -n $status_opts -l json -d 'One JSON object per directory and line'
complete -c tierlock -n $status_opts -l lock-name -x -d 'The lock file\'s name inside DIR'
complete -c tierlock -n $status_opts -l backend -x -d 'A lease backend URL: show the holder of --key there'
complete -c tierlock -n $status_opts -l key -x -d 'The lease key to show (with --backend)'
complete -c tierlock -n $status_opts -x -a '(__fish_complete_directories)'

# tierlock lock
set -l lock_opts '__fish_seen_subcommand_from lock'
complete -c tierlock -n $lock_opts -s h -l help -d 'Print help and exit'
complete -c tierlock -n $lock_opts -l fd -x -d 'The descriptor to lock'
complete -c tierlock -n $lock_opts -s s -l shared -d 'Take a shared lock'
complete -c tierlock -n $lock_opts -s u -l unlock -d 'Unlock the description'
complete -c tierlock -n $lock_opts -s n -l no-wait -d 'Exit at once if the lock is held'
complete -c tierlock -n $lock_opts -s w -l timeout -x -d 'Give up after SECONDS with the conflict code'
complete -c tierlock -n $lock_opts -s E -l conflict-exit-code -x -d 'Exit code when the lock is held (default 75)'
complete -c tierlock -n $lock_opts -l verbose -d 'Say who held the lock and how long the wait took'
complete -c tierlock -n $lock_opts -s q -l quiet -d 'No waiting or conflict message'

# tierlock version
complete -c tierlock -n '__fish_seen_subcommand_from version' -s h -l help -d 'Print help and exit'
