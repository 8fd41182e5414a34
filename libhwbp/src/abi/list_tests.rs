//! Tests of the listing format (`abi::list`): the exact text, every
//! refusal with its reason, forward compatibility, the size bounds, round
//! trips and fuzzing.

use super::list::*;
use super::*;
use proptest::prelude::*;

const SAMPLE: &str = "\
hwbp-list version=1 uid=0 cpus=2 now_ns=40000000 from=0
bp id=1 owner=0 path=cpu/0/mem:0xffff800000100000/8:w?pinned&kernel state=live enabled=yes value=12 lost=0 time_enabled_ns=40000000 time_running_ns=40000000
piece bp=1 piece=0xffff800000100000/8:w place=dr0@cpu0
bp id=3 owner=1000 path=task/101/mem:0x7003/6:w state=live enabled=yes value=5 lost=0 time_enabled_ns=40000000 time_running_ns=20000000
piece bp=3 piece=0x7003/1:w place=dr1@cpu0,dr0@cpu1
piece bp=3 piece=0x7004/4:w place=dr2@cpu0,dr1@cpu1
piece bp=3 piece=0x7008/1:w place=dr3@cpu0,dr2@cpu1
bp id=4 owner=1000 path=task/101/mem:0x7010/8:w state=live enabled=yes value=5 lost=0 time_enabled_ns=40000000 time_running_ns=20000000
piece bp=4 piece=0x7010/8:w place=waiting
bp id=9 owner=1000 path=task/102/mem:0x7000/4:rw?disabled state=ended enabled=no value=0 lost=0 time_enabled_ns=0 time_running_ns=0
piece bp=9 piece=0x7000/4:rw place=off
end entries=4 next=none
";

fn parse(s: &str) -> Result<Listing, ListError> {
    Listing::parse(s)
}

fn why(s: &str) -> (usize, ListErrorKind) {
    let e = parse(s).expect_err(s);
    (e.line, e.why)
}

#[test]
fn the_sample_parses_to_what_it_says_and_prints_back_byte_for_byte() {
    let l = parse(SAMPLE).unwrap();
    assert_eq!(l.header, ListHeader { version: 1, uid: 0, cpus: 2, now_ns: 40_000_000, from: 0 });
    assert_eq!(l.entries.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 3, 4, 9]);
    let cpu = &l.entries[0];
    assert_eq!((cpu.owner, cpu.sched(), cpu.path.target), (0, "pinned", Target::Cpu(0)));
    assert!(cpu.path.options.kernel);
    assert_eq!(cpu.count, CountRecord { value: 12, time_enabled_ns: 40_000_000, time_running_ns: 40_000_000, id: 1, lost: 0 });
    let split = &l.entries[1];
    assert_eq!(split.pieces.len(), 3);
    assert_eq!(split.pieces[0].place, Placement::Armed(vec![CpuSpan { slot: 1, first: 0, last: 0 }, CpuSpan { slot: 0, first: 1, last: 1 }]));
    assert_eq!((split.pieces[2].place.slot_on(0), split.pieces[2].place.slot_on(1), split.pieces[2].place.slot_on(2)), (Some(3), Some(2), None));
    assert_eq!(l.entries[2].pieces[0].place, Placement::Waiting);
    let ended = &l.entries[3];
    assert_eq!((ended.state, ended.enabled, &ended.pieces[0].place), (BpState::Ended, false, &Placement::Off));
    assert_eq!(l.next, None);
    assert_eq!(l.to_string(), SAMPLE);
}

#[test]
fn a_page_with_a_next_id_names_where_the_rest_starts() {
    let text = "hwbp-list version=1 uid=1000 cpus=1 now_ns=0 from=5\n\
                bp id=7 owner=1000 path=task/1/mem:0x1000/4:rw state=closed enabled=yes value=0 lost=0 time_enabled_ns=0 time_running_ns=0\n\
                piece bp=7 piece=0x1000/4:rw place=off\n\
                end entries=1 next=8\n";
    let l = parse(text).unwrap();
    assert_eq!((l.next, l.entries[0].state), (Some(8), BpState::Closed));
    assert_eq!(l.to_string(), text);
    assert_eq!(ListRequest { from: 8 }.to_string(), "list?from=8");
}

#[test]
fn any_other_version_is_refused_and_later_additions_are_ignored() {
    let v2 = SAMPLE.replacen("version=1", "version=2", 1);
    assert_eq!(why(&v2), (1, ListErrorKind::Version(2)));
    // New keys on known lines, and new line types, are additions: skipped.
    let added = SAMPLE
        .replacen(" from=0\n", " from=0 host=redox\n", 1)
        .replace("place=waiting\n", "place=waiting turns=3\nwatchers bp=4 n=2\n")
        .replacen("end entries=4", "end elapsed_ns=5 entries=4", 1);
    let l = parse(&added).unwrap();
    assert_eq!(l, parse(SAMPLE).unwrap());
}

#[test]
fn every_malformation_is_refused_with_its_line_and_reason() {
    let line_of = |needle: &str| SAMPLE.lines().position(|l| l.contains(needle)).unwrap() + 1;
    assert_eq!(why(""), (1, ListErrorKind::NotAListing));
    assert_eq!(why("hello\n"), (1, ListErrorKind::NotAListing));
    assert_eq!(why("hwbp-list version=1 uid=0 cpus=2 now_ns=0\n"), (1, ListErrorKind::Missing("from")));
    assert_eq!(why("hwbp-list version=1 version=1 uid=0 cpus=2 now_ns=0 from=0\nend entries=0 next=none\n"), (1, ListErrorKind::Duplicate("version")));
    assert_eq!(why("hwbp-list version=1  uid=0\n"), (1, ListErrorKind::BadField));
    assert_eq!(why("hwbp-list version=1 uid=0 cpus=x now_ns=0 from=0\n"), (1, ListErrorKind::BadValue("cpus")));
    // Truncated anywhere: no end line, or a last line without its newline.
    let cut = SAMPLE.rfind("end ").unwrap();
    assert_eq!(why(&SAMPLE[..cut]).1, ListErrorKind::Truncated);
    assert_eq!(why(&SAMPLE[..SAMPLE.len() - 1]).1, ListErrorKind::Truncated);
    assert_eq!(why(&SAMPLE[..100]).1, ListErrorKind::Truncated);
    assert_eq!(why(&format!("{SAMPLE}bp id=10\n")).1, ListErrorKind::TrailingAfterEnd);
    // Pieces belong to the bp line before them.
    let orphan = SAMPLE.replace("piece bp=4 ", "piece bp=3 ");
    assert_eq!(why(&orphan), (line_of("piece bp=4"), ListErrorKind::OrphanPiece));
    let first = "hwbp-list version=1 uid=0 cpus=1 now_ns=0 from=0\npiece bp=1 piece=0x10/4:rw place=off\nend entries=0 next=none\n";
    assert_eq!(why(first), (2, ListErrorKind::OrphanPiece));
    // Ids increase, from `from` on.
    assert_eq!(why(&SAMPLE.replace("bp id=4 ", "bp id=3 ").replace("piece bp=4 ", "piece bp=3 ")), (line_of("bp id=4"), ListErrorKind::Order));
    assert_eq!(why(&SAMPLE.replacen("from=0", "from=2", 1)), (2, ListErrorKind::Order));
    // The end line matches what came before it.
    assert_eq!(why(&SAMPLE.replace("entries=4", "entries=3")).1, ListErrorKind::EndMismatch);
    assert_eq!(why(&SAMPLE.replace("next=none", "next=9")).1, ListErrorKind::EndMismatch);
    assert_eq!(why("hwbp-list version=1 uid=0 cpus=1 now_ns=0 from=0\nend entries=0 next=3\n").1, ListErrorKind::EndMismatch);
    // Values.
    for (from, to, key) in [
        ("owner=1000 path=task/101/mem:0x7010", "owner=-1 path=task/101/mem:0x7010", "owner"),
        ("path=task/101/mem:0x7010/8:w", "path=task/101/mem:0x7010/8:r", "path"),
        ("state=ended", "state=gone", "state"),
        ("enabled=no", "enabled=false", "enabled"),
        ("value=12", "value=0x12", "value"),
        ("piece=0x7000/4:rw", "piece=0x7001/4:rw", "piece"),
    ] {
        assert_eq!(why(&SAMPLE.replace(from, to)).1, ListErrorKind::BadValue(key), "{to}");
    }
    for place in ["", "dr4@cpu0", "dr0@cpu1-0", "dr0@cpu0,dr1@cpu0", "dr0@cpu1,dr1@cpu0", "dr0@", "dr@cpu0", "dr00@cpu0", "dr0@cpu0,", "r0@cpu0", "dr0@cpu4294967296", "Waiting"] {
        let text = SAMPLE.replace("place=waiting", &format!("place={place}"));
        let e = why(&text).1;
        assert!(matches!(e, ListErrorKind::BadValue("place") | ListErrorKind::BadField), "place={place}: {e:?}");
    }
    assert_eq!(Listing::parse_bytes(b"hwbp-list \xff\n").unwrap_err().why, ListErrorKind::NotUtf8);
}

#[test]
fn the_list_request_path_is_list_with_an_optional_from() {
    let ok = |p: &str| ListRequest::parse(p).expect(p).expect(p);
    assert_eq!(ok("list"), ListRequest { from: 0 });
    assert_eq!(ok("/scheme/hwbp/list"), ListRequest { from: 0 });
    assert_eq!(ok("list?from=42"), ListRequest { from: 42 });
    assert_eq!(ok("list?from=0"), ListRequest { from: 0 });
    // Not the listing: a breakpoint path (hwbpd parses it as one).
    for p in ["task/1/mem:0x10", "lis", "listx", "list/1", "self/mem:0x10?list"] {
        assert!(ListRequest::parse(p).is_none(), "{p}");
    }
    let bad = |p: &str| ListRequest::parse(p).expect(p).expect_err(p);
    assert_eq!(bad("list?"), PathError::EmptyOption);
    assert_eq!(bad("list?from=1&"), PathError::EmptyOption);
    assert_eq!(bad("list?to=1"), PathError::UnknownOption("to".into()));
    assert_eq!(bad("list?from"), PathError::BadOptionValue("from"));
    assert_eq!(bad("list?from=-1"), PathError::BadOptionValue("from"));
    assert_eq!(bad("list?from=18446744073709551616"), PathError::BadOptionValue("from"));
    assert_eq!(bad("list?from=1&from=2"), PathError::DuplicateOption("from"));
    for r in [ListRequest { from: 0 }, ListRequest { from: 7 }, ListRequest { from: u64::MAX }] {
        assert_eq!(ok(&r.to_string()), r);
    }
}

#[test]
fn placements_group_cpus_into_runs_of_one_register() {
    assert_eq!(Placement::from_cpus([]), Placement::Waiting);
    let p = Placement::from_cpus([(0, 1), (1, 1), (2, 1), (3, 0), (5, 0), (6, 2)]);
    assert_eq!(p.to_string(), "dr1@cpu0-2,dr0@cpu3,dr0@cpu5,dr2@cpu6");
    assert_eq!((p.slot_on(2), p.slot_on(4), p.slot_on(5)), (Some(1), None, Some(0)));
    assert_eq!(Placement::from_cpus([(u32::MAX - 1, 3), (u32::MAX, 3)]).to_string(), format!("dr3@cpu{}-{}", u32::MAX - 1, u32::MAX));
}

/// The longest entry there can be: every field at its longest, four
/// pieces, each in a different register on every other CPU.
fn worst_entry(cpus: u32) -> ListEntry {
    let opts = "pinned&exclusive&disabled&period=18446744073709551615&wakeup=18446744073709551615&ring=1048576&kernel&nosplit";
    let path = OpenPath::parse(&format!("task/18446744073709551615/cpu/4294967295/mem:0xfffffffffffffff0/16:rw?{opts}")).unwrap();
    let place = Placement::from_cpus((0..cpus).map(|c| (u32::MAX - cpus + c, (c % 2) as u8)));
    let piece = |a| ListedPiece { piece: AdmittedPiece::new(a, 8, Access::ReadWrite).unwrap(), place: place.clone() };
    ListEntry {
        id: u64::MAX,
        owner: u32::MAX,
        path,
        state: BpState::Closed,
        enabled: true,
        count: CountRecord { value: u64::MAX, time_enabled_ns: u64::MAX, time_running_ns: u64::MAX, id: u64::MAX, lost: u64::MAX },
        pieces: (0..4).map(|i| piece(u64::MAX - 7 - 8 * i)).collect(),
    }
}

#[test]
fn the_documented_bounds_hold_for_the_longest_entry_and_frame() {
    for cpus in [1, 2, 4, 64, 4096] {
        let e = worst_entry(cpus);
        let len = e.to_string().len();
        assert!(len <= list_entry_bound(cpus), "{cpus} cpus: entry of {len} > {}", list_entry_bound(cpus));
        let frame = ListHeader { version: 1, uid: u32::MAX, cpus: u32::MAX, now_ns: u64::MAX, from: u64::MAX }.to_string().len()
            + ListEnd { entries: u64::MAX, next: Some(u64::MAX) }.to_string().len();
        assert!(list_snapshot_bound(cpus) >= LIST_PAGE_BYTES.max(len) + frame);
    }
    assert!(list_snapshot_bound(2) < 34 * 1024, "a page and a little with a few CPUs");
}

fn access() -> impl Strategy<Value = Access> {
    prop_oneof![Just(Access::Write), Just(Access::ReadWrite), Just(Access::Exec)]
}

fn piece() -> impl Strategy<Value = AdmittedPiece> {
    (any::<u64>(), 0usize..4, access()).prop_filter_map("aligned piece", |(a, l, acc)| {
        let len = if acc == Access::Exec { event::EXEC_LEN } else { [1, 2, 4, 8][l] };
        AdmittedPiece::new(a & !(len - 1), len, acc)
    })
}

fn placement() -> impl Strategy<Value = Placement> {
    prop_oneof![
        Just(Placement::Waiting),
        Just(Placement::Off),
        proptest::collection::vec((1u32..6, 0u8..4), 1..8).prop_map(|steps| {
            let mut cpu: Option<u32> = None;
            Placement::from_cpus(steps.into_iter().map(|(gap, slot)| {
                let c = cpu.map_or(gap - 1, |c| c + gap);
                cpu = Some(c);
                (c, slot)
            }))
        }),
    ]
}

fn entry() -> impl Strategy<Value = ListEntry> {
    let target = prop_oneof![
        any::<u64>().prop_map(Target::Task),
        (any::<u64>(), any::<u32>()).prop_map(|(pid, cpu)| Target::TaskOnCpu { pid, cpu }),
        any::<u32>().prop_map(Target::Cpu),
        Just(Target::AllCpus),
    ];
    let state = prop_oneof![Just(BpState::Live), Just(BpState::Ended), Just(BpState::Closed)];
    (
        (target, any::<u64>(), 1u64..64, access(), any::<[bool; 3]>()),
        (any::<u32>(), state, any::<[u64; 4]>()),
        proptest::collection::vec((piece(), placement()), 1..5),
    )
        .prop_filter_map("valid path", |((target, addr, len, acc, f), (owner, state, c), pieces)| {
            let len = if acc == Access::Exec { event::EXEC_LEN } else { len };
            let event = MemEvent::new(addr, len, acc).ok()?;
            let options = Options { pinned: f[0], exclusive: f[1], kernel: f[2], ..Options::default() };
            Some(ListEntry {
                id: 0,
                owner,
                path: OpenPath { target, event, options },
                state,
                enabled: f[0] ^ f[2],
                count: CountRecord { value: c[0], time_enabled_ns: c[1], time_running_ns: c[2], id: 0, lost: c[3] },
                pieces: pieces.into_iter().map(|(piece, place)| ListedPiece { piece, place }).collect(),
            })
        })
}

proptest! {
    #[test]
    fn listings_round_trip(
        header in (any::<u32>(), any::<u32>(), any::<u64>(), 0u64..1000),
        entries in proptest::collection::vec((1u64..50, entry()), 0..6),
        more in proptest::option::of(1u64..100),
    ) {
        let (uid, cpus, now_ns, from) = header;
        let mut id = from;
        let entries: Vec<ListEntry> = entries.into_iter().map(|(step, mut e)| {
            id += step;
            e.id = id;
            e.count.id = id;
            e
        }).collect();
        // hwbpd sets next= only on a page holding entries.
        let next = more.filter(|_| !entries.is_empty()).map(|m| id + m);
        let l = Listing { header: ListHeader { version: LIST_VERSION, uid, cpus, now_ns, from }, entries, next };
        let text = l.to_string();
        prop_assert_eq!(Listing::parse(&text), Ok(l.clone()));
        // Any cut short of the whole is refused, never misread.
        for cut in [text.len() / 3, text.len() / 2, text.len() - 1] {
            prop_assert!(Listing::parse(&text[..cut]).is_err());
        }
    }

    #[test]
    fn any_text_never_panics_the_parser(s in ".{0,200}") {
        let _ = Listing::parse(&s);
        let _ = ListRequest::parse(&s);
    }

    #[test]
    fn listing_shaped_text_never_panics_the_parser(s in "(hwbp-list |version=1 |bp |piece |end |id=|bp=|place=|dr[0-5]@cpu[0-9]|-|,|next=|none|entries=[0-9]|from=[0-9]|\n| |=|[0-9]){0,40}") {
        let _ = Listing::parse(&s);
    }

    #[test]
    fn any_bytes_never_panic_the_parser(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Listing::parse_bytes(&b);
    }
}
