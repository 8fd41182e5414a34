# The scripted session, part 2 (a new file: gdb -batch abandons a sourced
# file at its first error, and part 1 ends with one).
delete 9
continue
delete
continue
