# The scripted session, part 1. Run after connecting (the stub:
# `target remote | hwbp-gdbstub --sim`; Linux: `starti` on compare/prog.S
# built static). Addresses: see src/sim/program.rs.
set pagination off
set width 0
set confirm off
watch *(long *)0x404000
rwatch *(long *)0x404008
awatch *(long *)0x404010
hbreak *0x40102f
continue
continue
continue
continue
continue
info watchpoints
delete
watch *(long *)0x404000
watch *(long *)0x404008
watch *(long *)0x404010
watch *(long *)0x404018
watch *(long *)0x404020
# Five watchpoints, four debug registers: inserting them fails, this
# command errors, and gdb abandons the rest of this file.
continue
