"""Applications on top of the library: the command line (`cli`), the IOI demo (`demo`)
and self-contained HTML reports (`report`)."""
