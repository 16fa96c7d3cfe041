//! Every (state, command) pair and the timeouts, with injected time.

use super::*;

const T0: u64 = 1_800_000_000_000;

fn sid(n: u8) -> Uuid {
    Uuid::from_bytes([n; 16])
}

fn idle() -> Stream {
    Stream {
        id: Uuid::from_bytes([9; 16]),
        owner_id: "seller".into(),
        title: "t".into(),
        state: StreamState::Idle,
        created_at_ms: T0,
        updated_at_ms: T0,
        session: None,
        version: 0,
    }
}

fn run(s: &Stream, cmd: Command, now: u64) -> (Stream, Option<Transition>) {
    match apply(s, cmd, now, sid(1)).unwrap() {
        Outcome::Changed { stream, transition } => (*stream, transition),
        Outcome::Unchanged => (s.clone(), None),
    }
}

fn in_state(state: StreamState) -> Stream {
    let s = idle();
    match state {
        StreamState::Idle => s,
        StreamState::Live => run(&s, Command::Start, T0).0,
        StreamState::Paused => run(&run(&s, Command::Start, T0).0, Command::Pause, T0 + 1000).0,
        StreamState::Ended => run(&run(&s, Command::Start, T0).0, Command::End, T0 + 1000).0,
    }
}

#[test]
fn every_state_and_command() {
    use Command::*;
    use StreamState::*;
    // (state, command) → Ok(Some(new state)) for a transition, Ok(None) for no transition
    // (idempotent no-op or bookkeeping), Err for 409.
    let table: Vec<(StreamState, Command, Result<Option<StreamState>, ()>)> = vec![
        (Idle, Start, Ok(Some(Live))),
        (Idle, Pause, Err(())),
        (Idle, Resume, Err(())),
        (Idle, End, Err(())),
        (Idle, Heartbeat, Err(())),
        (Live, Start, Ok(None)),
        (Live, Pause, Ok(Some(Paused))),
        (Live, Resume, Ok(None)),
        (Live, End, Ok(Some(Ended))),
        (Live, Heartbeat, Ok(None)),
        (Paused, Start, Err(())),
        (Paused, Pause, Ok(None)),
        (Paused, Resume, Ok(Some(Live))),
        (Paused, End, Ok(Some(Ended))),
        (Paused, Heartbeat, Ok(None)),
        (Ended, Start, Ok(Some(Live))),
        (Ended, Pause, Err(())),
        (Ended, Resume, Err(())),
        (Ended, End, Ok(None)),
        (Ended, Heartbeat, Err(())),
    ];
    assert_eq!(table.len(), 20, "4 states × 5 commands");
    for (state, cmd, want) in table {
        let s = in_state(state);
        let got = apply(&s, cmd, T0 + 5000, sid(2));
        match (got, want) {
            (Err(e), Err(())) => {
                assert_eq!(e.state, state.as_str());
                assert_eq!(e.command, cmd.as_str());
            }
            (
                Ok(Outcome::Changed {
                    stream,
                    transition: Some(t),
                }),
                Ok(Some(to)),
            ) => {
                assert_eq!(stream.state, to, "{state:?} {cmd:?}");
                assert_eq!((t.from, t.to), (state, to));
                assert_eq!(t.version, s.version + 1);
                assert_eq!(stream.version, s.version + 1);
            }
            (Ok(Outcome::Unchanged), Ok(None)) => {}
            (
                Ok(Outcome::Changed {
                    stream,
                    transition: None,
                }),
                Ok(None),
            ) => {
                assert_eq!(stream.state, state);
                assert_eq!(stream.version, s.version, "bookkeeping is not a transition");
            }
            (got, want) => panic!("{state:?} + {cmd:?}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn start_after_end_opens_a_new_session_and_repeated_start_keeps_it() {
    let ended = in_state(StreamState::Ended);
    let old = ended.session.as_ref().unwrap().id;
    let (live, t) = match apply(&ended, Command::Start, T0 + 9000, sid(7)).unwrap() {
        Outcome::Changed { stream, transition } => (*stream, transition.unwrap()),
        other => panic!("{other:?}"),
    };
    assert_ne!(live.session.as_ref().unwrap().id, old);
    assert_eq!(t.session_id, sid(7));
    assert_eq!(
        apply(&live, Command::Start, T0 + 9001, sid(8)).unwrap(),
        Outcome::Unchanged
    );
}

#[test]
fn times_accumulate_across_pauses() {
    let s = idle();
    let (s, _) = run(&s, Command::Start, T0);
    let (s, _) = run(&s, Command::Pause, T0 + 10_000);
    let (s, _) = run(&s, Command::Resume, T0 + 15_000);
    let (s, t) = run(&s, Command::End, T0 + 45_000);
    let sess = s.session.unwrap();
    assert_eq!(sess.times(T0 + 99_999), (40_000, 5_000));
    assert_eq!(sess.ended_at_ms, Some(T0 + 45_000));
    assert_eq!(sess.end_reason, Some(Cause::Seller));
    assert_eq!(t.unwrap().version, 4);
}

#[test]
fn heartbeats_keep_a_session_live_and_their_absence_pauses_then_ends_it() {
    let hb = 15_000;
    let pause = 600_000;
    let (mut s, _) = run(&idle(), Command::Start, T0);
    // Heartbeats every 10 s: never auto-paused.
    for i in 1..=10u64 {
        assert!(tick(&s, T0 + i * 10_000, hb, pause).is_none());
        s = run(&s, Command::Heartbeat, T0 + i * 10_000).0;
    }
    let last = T0 + 100_000;
    assert!(
        tick(&s, last + hb, hb, pause).is_none(),
        "exactly the timeout is not yet late"
    );
    let (paused, t) = tick(&s, last + hb + 1, hb, pause).unwrap();
    assert_eq!(paused.state, StreamState::Paused);
    assert_eq!(t.kind, "auto_pause");
    assert_eq!(t.cause, Cause::SellerDisconnected);
    // Ticking again does nothing until the pause times out.
    assert!(tick(&paused, last + hb + 1 + pause, hb, pause).is_none());
    let (ended, t) = tick(&paused, last + hb + 2 + pause, hb, pause).unwrap();
    assert_eq!(ended.state, StreamState::Ended);
    assert_eq!(t.kind, "auto_end");
    assert_eq!(
        ended.session.as_ref().unwrap().end_reason,
        Some(Cause::PauseTimeout)
    );
    assert!(tick(&ended, u64::MAX, hb, pause).is_none());
}

#[test]
fn a_heartbeat_resumes_an_auto_pause_but_not_a_seller_pause() {
    let (s, _) = run(&idle(), Command::Start, T0);
    let (auto, _) = tick(&s, T0 + 20_000, 15_000, 600_000).unwrap();
    let (resumed, t) = run(&auto, Command::Heartbeat, T0 + 21_000);
    assert_eq!(resumed.state, StreamState::Live);
    let t = t.unwrap();
    assert_eq!(
        (t.kind.as_str(), t.cause),
        ("auto_resume", Cause::SellerReconnected)
    );
    // Resumed sessions are not instantly paused again.
    assert!(tick(&resumed, T0 + 22_000, 15_000, 600_000).is_none());

    let (manual, _) = run(&s, Command::Pause, T0 + 5_000);
    let (still, t) = run(&manual, Command::Heartbeat, T0 + 6_000);
    assert_eq!(still.state, StreamState::Paused);
    assert!(t.is_none());
}

#[test]
fn a_manual_pause_also_times_out() {
    let (s, _) = run(&idle(), Command::Start, T0);
    let (p, _) = run(&s, Command::Pause, T0 + 1_000);
    let (e, t) = tick(&p, T0 + 1_000 + 600_001, 15_000, 600_000).unwrap();
    assert_eq!(e.state, StreamState::Ended);
    assert_eq!(t.cause, Cause::PauseTimeout);
}

#[test]
fn commands_parse() {
    for c in ["start", "pause", "resume", "end", "heartbeat"] {
        assert_eq!(Command::parse(c).unwrap().as_str(), c);
    }
    assert!(Command::parse("stop").is_none());
}
