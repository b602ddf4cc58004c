"""Fencing of the contract net that no test held.

Pinned after a mutation run (session 15): each test below failed to fail when the
check it names was removed from the code (rival awards and cancels, epochs of proceed, cancel, result and renewals, the holder check, a resent cancel); each one fails on that mutant and
passes on the code as it is."""

from __future__ import annotations

from test_contracts_fakes import CAP, FakeNet, Msg, make_net, offer

from mesh.events import TaskAssigned, TaskAwarded, TaskCancelled
from protocols.contract_net import TaskSpec
from protocols.contract_net._state import ExecState
from protocols.contract_net.messages import Award, Cancel, Proceed


def _running():
    net = make_net(executors=1, auto_work=False)
    task_id = net.submit("req", TaskSpec(CAP))
    ((_, award),) = net.events(TaskAwarded)
    x = net.agents[award.winner]
    assert x.executor.job_state(task_id) is ExecState.RUNNING
    return net, task_id, award.winner, x


def test_rival_cancel_does_not_stop_a_running_job():
    net, task_id, _winner, x = _running()
    rival = Cancel(task_id=task_id, epoch=5, reason="superseded")
    x.on_message(Msg("cancel", "mallory", rival, None, net.now), "", net.now)
    assert x.executor.job_state(task_id) is ExecState.RUNNING
    assert not net.events(TaskCancelled)


def test_rival_award_does_not_supersede_a_running_job():
    net, task_id, _winner, x = _running()
    rival = Award(
        task_id=task_id,
        round=1,
        epoch=5,
        winner="m" * 52,
        capability=CAP,
        semantics="at-least-once",
        deadline=99.0,
        lease=6.0,
    )
    x.on_message(Msg("award", "mallory", rival, None, net.now), "", net.now)
    assert x.executor.job_state(task_id) is ExecState.RUNNING
    assert not net.events(TaskCancelled)


def test_proceed_of_another_epoch_does_not_start_an_at_most_once_job():
    net = FakeNet(auto_work=False)
    net.add("req")
    net.add("x00", offer())
    task_id = net.agents["req"].submit(TaskSpec(CAP, semantics="at-most-once"), net.now)
    for _ in range(100):  # deliver until the requester's proceed is next, then drop it
        if not net.queue:
            break
        if net.queue[0].kind == "proceed":
            net.queue.pop(0)
            break
        net.deliver_one()
    x = net.agents["x00"]
    assert x.executor.job_state(task_id) is ExecState.CLAIMING
    wrong = Proceed(task_id=task_id, epoch=7)
    x.on_message(Msg("proceed", "req", wrong, None, net.now), "", net.now)
    assert x.executor.job_state(task_id) is ExecState.CLAIMING
    assert not net.events(TaskAssigned)


def test_late_result_of_an_older_epoch_from_the_same_node_is_stale():
    from mesh.events import TaskCompleted
    from protocols.contract_net.messages import Result

    net = make_net(executors=1, auto_work=False)
    task_id = net.submit("req", TaskSpec(CAP))
    ((_, first),) = net.events(TaskAwarded)
    x = net.agents[first.winner]
    x.executor.fail(task_id, "transient", net.now)  # not final: a new auction, same node wins
    net.pump()
    epochs = [ev.epoch for _, ev in net.events(TaskAwarded)]
    assert epochs[-1] == 2 and net.agents["req"].task_state(task_id) is not None
    late = Result(task_id=task_id, epoch=1, result="old")
    net.agents["req"].on_message(Msg("result", first.winner, late, None, net.now), "", net.now)
    assert not net.events(TaskCompleted)
    assert net.ctxs["req"].counters["contract.stale_result"] == 1


def test_result_from_a_member_that_is_not_the_holder_is_stale():
    from mesh.events import TaskCompleted
    from protocols.contract_net.messages import Result

    net = make_net(executors=2, auto_work=False)
    task_id = net.submit("req", TaskSpec(CAP))
    ((_, award),) = net.events(TaskAwarded)
    other = next(n for n in ("x00", "x01") if n != award.winner)
    forged = Result(task_id=task_id, epoch=award.epoch, result="bogus")
    net.agents["req"].on_message(Msg("result", other, forged, None, net.now), "", net.now)
    assert not net.events(TaskCompleted)
    assert net.ctxs["req"].counters["contract.stale_result"] == 1


def test_renewal_of_an_older_epoch_from_the_same_node_does_not_renew():
    from protocols.contract_net.messages import Progress

    net = make_net(executors=1, auto_work=False)
    task_id = net.submit("req", TaskSpec(CAP))
    ((_, first),) = net.events(TaskAwarded)
    x = net.agents[first.winner]
    x.executor.fail(task_id, "transient", net.now)
    net.pump()
    assert [ev.epoch for _, ev in net.events(TaskAwarded)][-1] == 2
    before = net.ctxs["req"].counters.get("contract.stale_renewal", 0)
    late = Progress(task_id=task_id, epoch=1, percent=50.0)
    net.agents["req"].on_message(Msg("progress", first.winner, late, None, net.now), "", net.now)
    assert net.ctxs["req"].counters["contract.stale_renewal"] == before + 1


def test_holder_still_working_after_cancel_was_lost_is_told_again():
    from protocols.contract_net.messages import Progress

    net = make_net(executors=1, auto_work=False)
    task_id = net.submit("req", TaskSpec(CAP))
    ((_, award),) = net.events(TaskAwarded)
    net.agents["req"].cancel(task_id, net.now)
    net.queue = [p for p in net.queue if p.kind != "cancel"]  # the cancel is lost
    beat = Progress(task_id=task_id, epoch=award.epoch)
    net.agents["req"].on_message(Msg("progress", award.winner, beat, None, net.now), "", net.now)
    again = [p for p in net.queue if p.kind == "cancel" and p.to == award.winner]
    assert again and again[0].payload.epoch == award.epoch


def test_a_late_cancel_of_an_older_epoch_does_not_stop_the_new_epoch():
    net = make_net(executors=1, auto_work=False)
    task_id = net.submit("req", TaskSpec(CAP))
    ((_, first),) = net.events(TaskAwarded)
    x = net.agents[first.winner]
    x.executor.fail(task_id, "transient", net.now)
    net.pump()
    assert x.executor.job_state(task_id) is ExecState.RUNNING  # epoch 2, same node
    late = Cancel(task_id=task_id, epoch=1, reason="superseded")
    x.on_message(Msg("cancel", "req", late, None, net.now), "", net.now)
    assert x.executor.job_state(task_id) is ExecState.RUNNING
    assert not net.events(TaskCancelled)
