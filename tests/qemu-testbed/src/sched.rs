//! Tasks and a cooperative scheduler. Its switch path calls
//! `CpuDebugState::switch_to` exactly where Redox's `context::switch`
//! does: when the CPU changes contexts, with the next context's plan.

use hwbp_kern::ContextPlan;
use hwbp_kern::CpuPlan;
use hwbp_kern::regs::Counting;
use hwbp_kern::regs::hw::Hardware;

use crate::Global;
use crate::boot::{USER_CS, USER_DS};
use crate::trap::{self, DEBUG, RFLAGS_FIXED, TrapFrame, USER_FRAME};
use crate::user::{self, Cmd, SYS_DONE, SYS_KERNEL_WRITE};

pub const MAX_TASKS: usize = 12;
const USER_STACK_SIZE: usize = 16 * 1024;

pub type TaskId = usize;

#[repr(C, align(16))]
struct UserStack([u8; USER_STACK_SIZE]);

static USER_STACKS: Global<[UserStack; MAX_TASKS]> =
    Global::new([const { UserStack([0; USER_STACK_SIZE]) }; MAX_TASKS]);

#[derive(Clone, Copy, Debug)]
pub struct Task {
    /// Context id, as TrapInfo::context reports it.
    pub id: u64,
    frame: TrapFrame,
    /// The context's debug plan (None: no debug state at all).
    pub plan: Option<ContextPlan>,
}

/// How a task run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The command completed; the executor's result.
    Done(u64),
    /// The task trapped with an exception other than #DB.
    Fault { vector: u64, rip: u64 },
}

pub struct Scheduler {
    tasks: [Option<Task>; MAX_TASKS],
    current: Option<TaskId>,
    /// The switch path's registers, counting every write.
    pub regs: Counting<Hardware>,
}

pub static SCHED: Global<Scheduler> = Global::new(Scheduler {
    tasks: [None; MAX_TASKS],
    current: None,
    // SAFETY: only used at CPL 0 by the switch path, with interrupts off.
    regs: Counting::new(unsafe { Hardware::new() }),
});

/// Context ids start here so they are easy to tell from slot numbers.
const FIRST_CONTEXT_ID: u64 = 100;

impl Scheduler {
    /// A new task running `executor`, started once so that it waits for
    /// its first command.
    pub fn spawn(&mut self, plan: Option<ContextPlan>) -> TaskId {
        let t = self.spawn_at(user::executor as *const () as u64, 0, 0, 0, plan);
        let outcome = self.enter(t);
        assert_eq!(outcome, Outcome::Done(0), "a new task reaches its first syscall");
        t
    }

    /// A task that starts at `rip` with rax, rdi and extra RFLAGS bits.
    pub fn spawn_at(&mut self, rip: u64, rax: u64, rdi: u64, rflags: u64, plan: Option<ContextPlan>) -> TaskId {
        let t = self.tasks.iter().position(Option::is_none).expect("MAX_TASKS is enough for the checks");
        // SAFETY: each task owns the stack at its index.
        let stack = unsafe { &raw const USER_STACKS.get()[t] } as u64;
        let frame = TrapFrame {
            rip,
            rax,
            rdi,
            cs: u64::from(USER_CS),
            ss: u64::from(USER_DS),
            // At a function's entry rsp + 8 is 16-byte aligned.
            rsp: stack + USER_STACK_SIZE as u64 - 8,
            rflags: RFLAGS_FIXED | rflags,
            ..TrapFrame::ZERO
        };
        self.tasks[t] = Some(Task { id: FIRST_CONTEXT_ID + t as u64, frame, plan });
        t
    }

    pub fn task(&self, t: TaskId) -> &Task {
        self.tasks[t].as_ref().expect("a spawned task")
    }

    /// Replace a context's plan. The running context's plan is loaded at
    /// once (`reload`), the others' at their next switch.
    pub fn set_plan(&mut self, t: TaskId, plan: Option<ContextPlan>) {
        self.tasks[t].as_mut().expect("a spawned task").plan = plan;
        if self.current == Some(t) {
            // SAFETY: no trap touches the debug state during reload.
            let dbg = unsafe { DEBUG.get() };
            dbg.cpu.reload(&mut self.regs, plan.as_ref());
        }
    }

    /// Replace the CPU's plan and load it now (with the running context).
    pub fn set_cpu_plan(&mut self, plan: CpuPlan) {
        // SAFETY: as in set_plan.
        let dbg = unsafe { DEBUG.get() };
        dbg.cpu.set_plan(plan);
        let current = self.current.and_then(|t| self.tasks[t].as_ref()).and_then(|t| t.plan);
        dbg.cpu.reload(&mut self.regs, current.as_ref());
    }

    /// The switch path: what Redox's context switch does for hwbp.
    pub fn switch_to(&mut self, t: TaskId) {
        if self.current == Some(t) {
            return;
        }
        let task = self.tasks[t].as_ref().expect("a spawned task");
        // SAFETY: the switch path holds the debug state; no user memory is
        // touched while it does, so no #DB can come in between.
        let dbg = unsafe { DEBUG.get() };
        dbg.cpu.switch_to(&mut self.regs, task.plan.as_ref());
        dbg.context = task.id;
        self.current = Some(t);
    }

    /// Switch to `t` and have it perform `cmd`.
    pub fn run(&mut self, t: TaskId, cmd: Cmd) -> Outcome {
        self.switch_to(t);
        let (rax, rdi, rsi) = cmd.encode();
        let task = self.tasks[t].as_mut().expect("a spawned task");
        task.frame.rax = rax;
        task.frame.rdi = rdi;
        task.frame.rsi = rsi;
        self.enter(t)
    }

    /// Resume `t` where it stopped (a task spawned with `spawn_at`).
    pub fn resume(&mut self, t: TaskId) -> Outcome {
        self.enter(t)
    }

    /// Resume `t` until it completes a command or faults; serve its
    /// kernel-write syscalls on the way.
    fn enter(&mut self, t: TaskId) -> Outcome {
        self.switch_to(t);
        loop {
            let task = self.tasks[t].as_mut().expect("a spawned task");
            // SAFETY: USER_FRAME is ours until the task traps back, and
            // the trap entry writes it only after leaving the task's stack.
            unsafe {
                *USER_FRAME.get() = task.frame;
                DEBUG.get().stats.this_run = 0;
                trap::enter_user(USER_FRAME.get());
                task.frame = *USER_FRAME.get();
            }
            let f = &mut task.frame;
            if f.vector != u64::from(trap::SYSCALL_VECTOR) {
                return Outcome::Fault { vector: f.vector, rip: f.rip };
            }
            match f.rax {
                SYS_DONE => return Outcome::Done(f.rdi),
                SYS_KERNEL_WRITE => {
                    // A kernel-mode store to the user buffer (CPL 0, the
                    // task's plan loaded): may raise #DB in the kernel.
                    // SAFETY: the checks pass addresses of their own
                    // statics, identity-mapped.
                    unsafe { core::ptr::write_volatile(f.rdi as *mut u64, f.rsi) };
                    f.rax = 0;
                }
                _ => return Outcome::Fault { vector: f.vector, rip: f.rip },
            }
        }
    }
}
