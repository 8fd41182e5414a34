use crate::sched::SCHED;
use crate::user::Cmd;
use crate::serial;
static mut X: u64 = 0;
pub fn run() -> ! {
    let s = unsafe { SCHED.get() };
    let a = s.spawn(None);
    let b = s.spawn(None);
    let r = s.run(a, Cmd::Write { addr: &raw mut X as u64, size: 8 });
    crate::println!("a: {r:?} x={:#x}", unsafe { X });
    let r = s.run(b, Cmd::Read { addr: &raw mut X as u64, size: 8 });
    crate::println!("b: {r:?}");
    serial::exit(serial::ExitCode::Passed)
}
