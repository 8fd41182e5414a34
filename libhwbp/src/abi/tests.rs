//! Grammar tests of the open path, options, admitted path and commands,
//! each with the exact error, plus round trips and fuzzing.

use super::*;
use core::num::NonZeroU64;
use proptest::prelude::*;

fn p(s: &str) -> Result<OpenPath, PathError> {
    OpenPath::parse(s)
}

fn err(s: &str) -> PathError {
    p(s).expect_err(s)
}

#[test]
fn every_target_form_parses() {
    assert_eq!(p("task/42/mem:0x1000").unwrap().target, Target::Task(42));
    assert_eq!(p("task/42/cpu/3/mem:0x1000").unwrap().target, Target::TaskOnCpu { pid: 42, cpu: 3 });
    assert_eq!(p("cpu/1/mem:0x1000").unwrap().target, Target::Cpu(1));
    assert_eq!(p("cpu/all/mem:0x1000").unwrap().target, Target::AllCpus);
    assert_eq!(p("self/mem:0x1000").unwrap().target, Target::SelfTask);
}

#[test]
fn scheme_prefix_and_leading_slash_are_accepted() {
    let want = p("task/7/mem:0x10:w").unwrap();
    assert_eq!(p("/scheme/hwbp/task/7/mem:0x10:w").unwrap(), want);
    assert_eq!(p("/task/7/mem:0x10:w").unwrap(), want);
    assert_eq!(want.to_scheme_path(), "/scheme/hwbp/task/7/mem:0x10/4:w");
}

#[test]
fn bad_targets_are_einval_with_the_reason() {
    assert_eq!(err(""), PathError::Empty);
    assert_eq!(err("/scheme/hwbp/"), PathError::Empty);
    assert_eq!(err("proc/1/mem:0x10"), PathError::UnknownTarget);
    assert_eq!(err("self"), PathError::UnknownTarget);
    assert_eq!(err("task/x/mem:0x10"), PathError::BadPid);
    assert_eq!(err("task/-1/mem:0x10"), PathError::BadPid);
    assert_eq!(err("task//mem:0x10"), PathError::BadPid);
    assert_eq!(err("task/0x2a/mem:0x10"), PathError::BadPid);
    assert_eq!(err("task/1/cpu/x/mem:0x10"), PathError::BadCpu);
    assert_eq!(err("task/1/cpu/all/mem:0x10"), PathError::BadCpu);
    assert_eq!(err("cpu//mem:0x10"), PathError::BadCpu);
    assert_eq!(err("task/1"), PathError::NotMemEvent);
    assert_eq!(err("task/1/"), PathError::NotMemEvent);
    assert_eq!(err("cpu/1"), PathError::NotMemEvent);
    assert_eq!(err("task/1/cpu/2"), PathError::NotMemEvent);
    assert_eq!(err("task/1/foo:0x10"), PathError::NotMemEvent);
    for e in [err("task/x/mem:0x10"), err("cpu/all")] {
        assert_eq!(e.errno(), errno::EINVAL);
    }
}

#[test]
fn ids_too_large_for_their_type_are_well_formed_and_name_no_task_or_cpu() {
    // Contract 7: ESRCH (from the server) for any well-formed numeric id
    // that does not exist, however large; the parser keeps the type's
    // largest value, which no task or CPU has.
    assert_eq!(p("task/18446744073709551616/mem:0x10").unwrap().target, Target::Task(u64::MAX));
    assert_eq!(p(&format!("task/{}/mem:0x10", "9".repeat(400))).unwrap().target, Target::Task(u64::MAX));
    assert_eq!(p("cpu/4294967296/mem:0x10").unwrap().target, Target::Cpu(u32::MAX));
    assert_eq!(
        p("task/1/cpu/99999999999999999999999/mem:0x10").unwrap().target,
        Target::TaskOnCpu { pid: 1, cpu: u32::MAX }
    );
}

#[test]
fn event_errors_surface_through_the_path() {
    assert_eq!(err("self/mem:0x10:r"), PathError::ReadOnlyAccess);
    assert_eq!(err("self/mem:0x10:rwx"), PathError::ExecWithData);
    assert_eq!(err("self/mem:0x10/0"), PathError::ZeroLength);
    assert_eq!(err("self/mem:0x10/4:x"), PathError::ExecLength);
    assert_eq!(err("self/mem:zz"), PathError::BadAddress);
    assert_eq!(err("self/mem:0x10/"), PathError::BadLength);
    assert_eq!(err("self/mem:0x10:w/junk"), PathError::BadAccess);
}

#[test]
fn options_default_when_absent() {
    let o = p("self/mem:0x10").unwrap().options;
    assert_eq!(o, Options::default());
    assert_eq!((o.period.get(), o.wakeup.get(), o.ring.get()), (1, 1, DEFAULT_RING));
    assert!(!(o.pinned || o.exclusive || o.disabled || o.kernel || o.nosplit));
}

#[test]
fn every_option_parses() {
    let o = p("self/mem:0x10?pinned&exclusive&disabled&period=3&wakeup=5&ring=16&kernel&nosplit").unwrap().options;
    assert!(o.pinned && o.exclusive && o.disabled && o.kernel && o.nosplit);
    assert_eq!((o.period.get(), o.wakeup.get(), o.ring.get()), (3, 5, 16));
}

#[test]
fn options_in_any_order_give_the_same_path() {
    assert_eq!(p("self/mem:0x10?nosplit&pinned").unwrap(), p("self/mem:0x10?pinned&nosplit").unwrap());
}

#[test]
fn option_errors_are_einval_with_the_reason() {
    assert_eq!(err("self/mem:0x10?"), PathError::EmptyOption);
    assert_eq!(err("self/mem:0x10?pinned&"), PathError::EmptyOption);
    assert_eq!(err("self/mem:0x10?&pinned"), PathError::EmptyOption);
    assert_eq!(err("self/mem:0x10?pinned&&kernel"), PathError::EmptyOption);
    assert_eq!(err("self/mem:0x10?bogus"), PathError::UnknownOption("bogus".into()));
    assert_eq!(err("self/mem:0x10?Pinned"), PathError::UnknownOption("Pinned".into()));
    assert_eq!(err("self/mem:0x10?pinned?kernel"), PathError::UnknownOption("pinned?kernel".into()));
    assert_eq!(err("self/mem:0x10?pinned&pinned"), PathError::DuplicateOption("pinned"));
    assert_eq!(err("self/mem:0x10?period=2&period=2"), PathError::DuplicateOption("period"));
    assert_eq!(err("self/mem:0x10?pinned=1"), PathError::UnexpectedValue("pinned"));
    assert_eq!(err("self/mem:0x10?kernel="), PathError::UnexpectedValue("kernel"));
    assert_eq!(err("self/mem:0x10?period"), PathError::BadOptionValue("period"));
    assert_eq!(err("self/mem:0x10?period="), PathError::BadOptionValue("period"));
    assert_eq!(err("self/mem:0x10?period=0x2"), PathError::BadOptionValue("period"));
    assert_eq!(err("self/mem:0x10?wakeup=-1"), PathError::BadOptionValue("wakeup"));
    assert_eq!(err("self/mem:0x10?ring=1k"), PathError::BadOptionValue("ring"));
    assert_eq!(err("self/mem:0x10?period=99999999999999999999"), PathError::BadOptionValue("period"));
    assert!(matches!(err("self/mem:0x10?period=0"), PathError::OptionOutOfRange { option: "period", min: 1, .. }));
    assert!(matches!(err("self/mem:0x10?wakeup=0"), PathError::OptionOutOfRange { option: "wakeup", min: 1, .. }));
    assert!(matches!(err("self/mem:0x10?ring=0"), PathError::OptionOutOfRange { option: "ring", min: 1, .. }));
    assert_eq!(
        err(&format!("self/mem:0x10?ring={}", MAX_RING + 1)),
        PathError::OptionOutOfRange { option: "ring", min: 1, max: u64::from(MAX_RING) }
    );
    assert_eq!(p(&format!("self/mem:0x10?ring={MAX_RING}")).unwrap().options.ring.get(), MAX_RING);
}

#[test]
fn trailing_junk_is_einval() {
    assert_eq!(err("self/mem:0x10#x"), PathError::TrailingJunk);
    assert_eq!(err("self/mem:0x10:w "), PathError::BadAccess);
    assert_eq!(err("self/mem:0x10?pinned "), PathError::UnknownOption("pinned ".into()));
    assert_eq!(err("self/mem:0x10?ring=4 "), PathError::BadOptionValue("ring"));
    assert_eq!(err("self/mem:0x10\n"), PathError::BadAddress);
    // An admitted path is not an open path.
    assert_eq!(err("self/mem:0x10?pinned#pieces=0x10/4:rw"), PathError::UnknownOption("pinned#pieces".into()));
    assert_eq!(err("self/mem:0x10#pieces=0x10/4:rw"), PathError::TrailingJunk);
}

#[test]
fn canonical_form_spells_the_event_and_non_default_options() {
    let cases = [
        ("task/42/mem:4096", "task/42/mem:0x1000/4:rw"),
        ("/scheme/hwbp/self/mem:0X1000:x", "self/mem:0x1000/8:x"),
        ("cpu/all/mem:0x10/6:w?ring=1024&period=1&pinned", "cpu/all/mem:0x10/6:w?pinned"),
        (
            "task/1/cpu/2/mem:0x10:w?nosplit&kernel&ring=8&wakeup=2&period=3&disabled&exclusive&pinned",
            "task/1/cpu/2/mem:0x10/4:w?pinned&exclusive&disabled&period=3&wakeup=2&ring=8&kernel&nosplit",
        ),
    ];
    for (input, canonical) in cases {
        let parsed = p(input).unwrap();
        assert_eq!(parsed.to_string(), canonical);
        assert_eq!(p(canonical).unwrap(), parsed);
    }
}

#[test]
fn admitted_path_lists_pieces_and_parses_back() {
    let path = p("task/42/mem:0x1001/6:w?pinned").unwrap();
    let pieces = [
        AdmittedPiece::new(0x1001, 1, Access::Write).unwrap(),
        AdmittedPiece::new(0x1002, 2, Access::Write).unwrap(),
        AdmittedPiece::new(0x1004, 2, Access::Write).unwrap(),
        AdmittedPiece::new(0x1006, 1, Access::Write).unwrap(),
    ];
    let text = path.with_pieces(&pieces).to_string();
    assert_eq!(text, "task/42/mem:0x1001/6:w?pinned#pieces=0x1001/1:w,0x1002/2:w,0x1004/2:w,0x1006/1:w");
    let back = AdmittedPath::parse(&text).unwrap();
    assert_eq!(back.path, path);
    assert_eq!(back.pieces, pieces);
    assert_eq!(back.to_string(), text);
    let exec = AdmittedPath::parse("self/mem:0x400000/8:x#pieces=0x400000/8:x").unwrap();
    assert_eq!(exec.pieces[0].access(), Access::Exec);
}

#[test]
fn admitted_pieces_must_be_aligned_single_registers() {
    assert_eq!(AdmittedPiece::new(0x1001, 2, Access::Write), None);
    assert_eq!(AdmittedPiece::new(0x1000, 3, Access::Write), None);
    assert_eq!(AdmittedPiece::new(0x1000, 16, Access::ReadWrite), None);
    for bad in [
        "self/mem:0x10",
        "self/mem:0x10#pieces=",
        "self/mem:0x10#pieces=0x10/4:rw,",
        "self/mem:0x10#pieces=0x11/4:rw",
        "self/mem:0x10#pieces=16/4:rw",
        "self/mem:0x10#pieces=0x10/4",
        "self/mem:0x10#pieces=0x10:rw",
        "self/mem:0x10#pieces=0x10/4:r",
    ] {
        assert_eq!(AdmittedPath::parse(bad), Err(PathError::BadPieces), "{bad}");
    }
}

#[test]
fn commands_parse_with_an_optional_newline() {
    assert_eq!(Command::parse("enable"), Ok(Command::Enable));
    assert_eq!(Command::parse("disable\n"), Ok(Command::Disable));
    assert_eq!(Command::parse_bytes(b"reset\n"), Ok(Command::Reset));
    let m = Command::parse("modify mem:0x2000/2:w\n").unwrap();
    assert_eq!(m, Command::Modify { event: MemEvent::new(0x2000, 2, Access::Write).unwrap(), options: None });
    let m = Command::parse("modify mem:0x2000:w?pinned&period=4").unwrap();
    let Command::Modify { options: Some(o), .. } = m else { panic!("{m:?}") };
    assert!(o.pinned);
    assert_eq!(o.period, NonZeroU64::new(4).unwrap());
}

#[test]
fn bad_commands_are_einval_with_the_reason() {
    assert_eq!(Command::parse(""), Err(PathError::UnknownCommand(String::new())));
    assert_eq!(Command::parse("\n"), Err(PathError::UnknownCommand(String::new())));
    assert_eq!(Command::parse("start"), Err(PathError::UnknownCommand("start".into())));
    assert_eq!(Command::parse("Enable"), Err(PathError::UnknownCommand("Enable".into())));
    assert_eq!(Command::parse("enable\n\n"), Err(PathError::TrailingJunk));
    assert_eq!(Command::parse("enable now"), Err(PathError::TrailingJunk));
    assert_eq!(Command::parse(" enable"), Err(PathError::UnknownCommand(String::new())));
    assert_eq!(Command::parse("modify"), Err(PathError::MissingEvent));
    assert_eq!(Command::parse("modify "), Err(PathError::MissingEvent));
    assert_eq!(Command::parse("modify mem:0x10:r"), Err(PathError::ReadOnlyAccess));
    assert_eq!(Command::parse("modify mem:0x10?"), Err(PathError::EmptyOption));
    assert_eq!(Command::parse("modify  mem:0x10"), Err(PathError::NotMemEvent));
    assert_eq!(Command::parse_bytes(&[0xff, 0xfe]), Err(PathError::NotUtf8));
}

#[test]
fn commands_round_trip_through_display() {
    let ev = MemEvent::new(0x2000, 6, Access::ReadWrite).unwrap();
    let opts = Options { pinned: true, ..Options::default() };
    for c in [
        Command::Enable,
        Command::Disable,
        Command::Reset,
        Command::Modify { event: ev, options: None },
        Command::Modify { event: ev, options: Some(opts) },
        Command::Modify { event: ev, options: Some(Options::default()) },
    ] {
        assert_eq!(Command::parse(&c.to_string()), Ok(c), "{c}");
        assert_eq!(Command::parse(&format!("{c}\n")), Ok(c), "{c}");
    }
}

// ---- property tests --------------------------------------------------------

fn access() -> impl Strategy<Value = Access> {
    prop_oneof![Just(Access::Exec), Just(Access::Write), Just(Access::ReadWrite)]
}

fn event() -> impl Strategy<Value = MemEvent> {
    (any::<u64>(), 1u64..=64, access()).prop_filter_map("valid event", |(addr, len, acc)| {
        let len = if acc == Access::Exec { event::EXEC_LEN } else { len };
        MemEvent::new(addr, len, acc).ok()
    })
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        any::<u64>().prop_map(Target::Task),
        (any::<u64>(), any::<u32>()).prop_map(|(pid, cpu)| Target::TaskOnCpu { pid, cpu }),
        any::<u32>().prop_map(Target::Cpu),
        Just(Target::AllCpus),
        Just(Target::SelfTask),
    ]
}

/// Any options; `stop` only with `period=1` (the other combination never
/// parses).
fn options() -> impl Strategy<Value = Options> {
    (any::<[bool; 6]>(), 1u64.., 1u64.., 1u64..=u64::from(MAX_RING)).prop_map(|(f, period, wakeup, ring)| Options {
        pinned: f[0],
        exclusive: f[1],
        disabled: f[2],
        kernel: f[3],
        nosplit: f[4],
        stop: f[5],
        period: NonZeroU64::new(if f[5] { 1 } else { period }).unwrap(),
        wakeup: NonZeroU64::new(wakeup).unwrap(),
        ring: RingSize::new(ring).unwrap(),
    })
}

proptest! {
    #[test]
    fn any_string_never_panics_any_parser(s in ".{0,80}") {
        let _ = OpenPath::parse(&s);
        let _ = AdmittedPath::parse(&s);
        let _ = MemEvent::parse(&s);
        let _ = Command::parse(&s);
        let _ = Options::parse(&s);
    }

    #[test]
    fn grammar_shaped_strings_never_panic(s in "(task|cpu|self|all|/|[0-9]|mem:|0x|[a-f]|:|r|w|x|\\?|&|=|pinned|ring|period|#pieces=|,){0,24}") {
        let _ = OpenPath::parse(&s);
        let _ = AdmittedPath::parse(&s);
        let _ = Command::parse(&format!("modify {s}"));
    }

    #[test]
    fn any_bytes_never_panic_record_or_command_decoders(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = CountRecord::from_slice(&b);
        let _ = EventRecord::from_slice(&b);
        let _ = EventRecord::decode_all(&b).count();
        let _ = Command::parse_bytes(&b);
    }

    #[test]
    fn open_paths_round_trip(target in target(), event in event(), options in options()) {
        // `stop` on a cpu-wide target never parses (tested below).
        let options = Options { stop: options.stop && !target.is_cpu_wide(), ..options };
        let path = OpenPath { target, event, options };
        let text = path.to_string();
        prop_assert_eq!(OpenPath::parse(&text), Ok(path));
        prop_assert_eq!(OpenPath::parse(&path.to_scheme_path()), Ok(path));
    }

    #[test]
    fn events_round_trip(event in event()) {
        prop_assert_eq!(MemEvent::parse(&event.to_string()), Ok(event));
    }

    #[test]
    fn records_round_trip(v in any::<[u64; 10]>()) {
        let c = CountRecord { value: v[0], time_enabled_ns: v[1], time_running_ns: v[2], id: v[3], lost: v[4] };
        prop_assert_eq!(CountRecord::from_bytes(&c.to_bytes()), c);
        let e = EventRecord { id: v[0], ip: v[1], addr: v[2], access: v[3], pid: v[4], cpu: v[5], timestamp_ns: v[6], hit: v[7], tid: v[8], flags: v[9] };
        prop_assert_eq!(EventRecord::from_bytes(&e.to_bytes()), e);
        prop_assert_eq!(EventRecord::from_bytes_v1(&e.to_bytes_v1()), EventRecord { tid: 0, flags: 0, ..e });
    }

    #[test]
    fn resume_commands_round_trip(tid in any::<Option<u64>>()) {
        let c = Command::Resume { tid };
        prop_assert_eq!(Command::parse(&c.to_string()), Ok(c));
    }

    #[test]
    fn scaled_value_is_at_least_the_raw_value(value in any::<u64>(), enabled in any::<u64>(), running in 1u64..) {
        let c = CountRecord { value, time_enabled_ns: enabled, time_running_ns: running, id: 0, lost: 0 };
        prop_assert!(c.scaled_value().unwrap() >= value);
    }
}

#[test]
fn a_stream_path_is_the_admitted_path_and_events() {
    let text = "task/7/mem:0x1001/2:w#pieces=0x1001/1:w,0x1002/1:w#events-v2";
    let a = AdmittedPath::parse_stream(text).unwrap();
    assert_eq!(a.pieces.len(), 2);
    assert_eq!(format!("{a}{EVENTS_MARK}"), text);
    let v1 = "task/7/mem:0x1001/2:w#pieces=0x1001/1:w,0x1002/1:w#events";
    assert_eq!(AdmittedPath::parse_stream(v1), Ok(a.clone()), "a version-1 stream");
    assert_eq!(format!("{a}{EVENTS_V1_MARK}"), v1);
    assert_eq!(AdmittedPath::parse_stream("task/7/mem:0x1001/2:w#pieces=0x1001/1:w"), Err(PathError::BadPieces));
    assert_eq!(AdmittedPath::parse_stream("task/7/mem:0x1001/2:w#pieces=#events"), Err(PathError::BadPieces));
}

#[test]
fn the_event_parser_does_not_depend_on_the_path_parser() {
    // event <- path, both <- error: no circle between the two parsers.
    let event = include_str!("event.rs");
    assert!(!event.contains("super::path"), "abi::event must not import abi::path");
}

#[test]
fn stop_is_a_flag_for_task_targets_with_period_1() {
    for target in ["task/42", "task/42/cpu/1", "self"] {
        let path = p(&format!("{target}/mem:0x1000:x?stop")).unwrap();
        assert!(path.options.stop, "{target}");
        assert_eq!(path.to_string(), format!("{target}/mem:0x1000/8:x?stop"));
    }
    assert_eq!(p("task/1/mem:0x10:w?pinned&stop&ring=8").unwrap().to_string(), "task/1/mem:0x10/4:w?pinned&ring=8&stop");
    assert_eq!(err("cpu/0/mem:0x10?stop"), PathError::StopNeedsTask);
    assert_eq!(err("cpu/all/mem:0x10?stop"), PathError::StopNeedsTask);
    assert_eq!(err("self/mem:0x10?stop&period=2"), PathError::StopWithPeriod);
    assert_eq!(err("self/mem:0x10?period=2&stop"), PathError::StopWithPeriod);
    assert_eq!(p("self/mem:0x10?stop&period=1").unwrap().options.stop, true);
    assert_eq!(err("self/mem:0x10?stop=1"), PathError::UnexpectedValue("stop"));
    assert_eq!(err("self/mem:0x10?stop&stop"), PathError::DuplicateOption("stop"));
    assert_eq!(err("cpu/0/mem:0x10?stop").errno(), errno::EINVAL);
    let o = Options { stop: true, ..Options::default() };
    assert_eq!(o.check_target(Target::Cpu(0)), Err(PathError::StopNeedsTask));
    assert_eq!(o.check_target(Target::TaskOnCpu { pid: 1, cpu: 0 }), Ok(()));
    let periodic = Options { period: NonZeroU64::new(3).unwrap(), ..o };
    assert_eq!(periodic.check_target(Target::SelfTask), Err(PathError::StopWithPeriod));
    // `modify` options are checked the same way (the target is the server's to check).
    assert_eq!(Command::parse("modify mem:0x10?stop&period=4"), Err(PathError::StopWithPeriod));
    assert_eq!(
        Command::parse("modify mem:0x10?stop"),
        Ok(Command::Modify { event: MemEvent::parse("mem:0x10").unwrap(), options: Some(o) })
    );
}

#[test]
fn resume_takes_a_decimal_thread_id_or_nothing() {
    assert_eq!(Command::parse("resume"), Ok(Command::Resume { tid: None }));
    assert_eq!(Command::parse("resume\n"), Ok(Command::Resume { tid: None }));
    assert_eq!(Command::parse("resume 42"), Ok(Command::Resume { tid: Some(42) }));
    assert_eq!(Command::parse("resume 42\n"), Ok(Command::Resume { tid: Some(42) }));
    // Well-formed however large: names no thread (hwbpd answers ESRCH).
    assert_eq!(Command::parse("resume 99999999999999999999"), Ok(Command::Resume { tid: Some(u64::MAX) }));
    for bad in ["resume abc", "resume -1", "resume 0x10", "resume ", "resume 1 2", "resume 1 ", "resume  1", "resume +1"] {
        assert_eq!(Command::parse(bad), Err(PathError::BadThreadId), "{bad:?}");
    }
    assert_eq!(Command::parse("resumes"), Err(PathError::UnknownCommand("resumes".into())));
    assert_eq!(Command::parse("resume 1").unwrap().to_string(), "resume 1");
    assert_eq!(Command::Resume { tid: None }.to_string(), "resume");
}
