"""Journal storages (hydra.sweeper.storage=PATH.log): an append-only file of JSON records, one a
line. A writer stopped mid-line leaves the last line cut; Optuna then skips it while reading
(a finished trial shows as RUNNING) and appends the next record to it (the file cannot be read
at all after that). So a cut journal is refused at every open and never appended to, and
`tinycnn repair PATH` rewrites it with every complete record."""

import json

from tinycnn.locking import file_lock

REPAIR = "tinycnn repair"



def _records(raw: bytes):
    """(line number, bytes, parsed or None) for every line of a journal file."""
    lines = raw.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline: a cut last line otherwise
    for i, line in enumerate(lines + ([tail] if tail else []), start=1):
        cut = i == len(lines) + 1
        try:
            record = None if cut else json.loads(line)
        except ValueError:
            record = None
        yield i, line, record if isinstance(record, dict) else None


def journal_problem(path: str) -> str | None:
    """What is wrong with a journal file, in one line, or None (also for one that is absent)."""
    try:
        raw = open(path, "rb").read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"the journal {path} cannot be read ({exc.strerror})"
    bad = [(i, line) for i, line, record in _records(raw) if record is None]
    if not bad:
        return None
    total = raw.count(b"\n") + (not raw.endswith(b"\n"))
    i, line = bad[0]
    what = "is cut off (a writer stopped mid-line)" if i == total and not raw.endswith(b"\n") \
        else "is not a complete JSON record"
    more = f" ({len(bad)} such lines in all)" if len(bad) > 1 else ""
    return (f"the journal {path}: line {i} of {total} {what}{more}; nothing is appended to it "
            f"until it is repaired: {REPAIR} {path} keeps every complete record (the bad "
            f"lines go to {path}.bad)")


def repair_journal(path: str) -> str:
    """Rewrite a journal file with its complete records only (a cut line that another record was
    appended to gives that record back); the bad lines are kept in PATH.bad. Returns what was
    done, in one line."""
    from tinycnn.record import write_text_atomic
    with file_lock(path + ".repair-lock"):
        raw = open(path, "rb").read()
        keep, bad, saved = [], [], 0
        for i, line, record in _records(raw):
            if record is not None:
                keep.append(line)
                continue
            bad.append(line)
            # "cut{...}": a writer appended a whole record to a line cut short
            at = line.find(b'{"op_code"', 1)
            while at > 0:
                try:
                    if isinstance(json.loads(line[at:]), dict):
                        keep.append(line[at:])
                        saved += 1
                        break
                except ValueError:
                    pass
                at = line.find(b'{"op_code"', at + 1)
        if not bad:
            return f"the journal {path} has no bad lines: nothing to repair"
        with open(path + ".bad", "ab") as f:
            f.write(b"\n".join(bad) + b"\n")
        write_text_atomic(path, (b"\n".join(keep) + b"\n").decode() if keep else "")
    return (f"repaired {path}: kept {len(keep):,} complete records ({saved} recovered from "
            f"after a cut), moved {len(bad)} bad line(s) to {path}.bad")
