"""The second distributed engine: Beam's Dask runner on a dask.distributed cluster.

For users with an HPC cluster (dask-jobqueue), Kubernetes (dask-kubernetes) or one big machine
and no Google Cloud. Every job takes it the same way::

    dask scheduler --port 8786 &  dask worker tcp://127.0.0.1:8786 --nworkers 2 --nthreads 1 &
    earthembed embed --stac S/catalog.json --bbox ... --year 2023 --out OUT \\
        --runner DaskRunner --dask_client_address tcp://127.0.0.1:8786

Beam's DaskRunner (apache_beam.runners.dask, 2.77) translates a pipeline into dask bags with
two gaps our jobs fall into, which `DaskRunner` here closes:

- A ParDo with tagged outputs (`.with_outputs(...)`) yields one bag holding every output
  mixed; Beam's runner hands that whole bag to each consumer, so a GroupByKey after a tagged
  output receives the other tags' elements. Here each consumer gets only its own tag's
  elements (`_select`).
- Only the last transform's bag is computed, so a branch that does not feed it (a dead
  letter, a run summary) never runs. Here every leaf bag (one no transform consumes) is.
- A side input is computed per bundle that reads it, each time with its whole upstream graph,
  and the leaves are fused into graphs of their own: a DoFn upstream of k side inputs runs
  k + 1 times (build-training-data read every COG about ten times: tf.Transform's analyzers,
  the counts and the writers' init results are side inputs). Here a side input is persisted
  once, no graph is fused (so a task keeps its key in every submission and the scheduler runs
  it once), and every bag built before a side input is held until the leaves are submitted
  (so a task a side input needed is not released and recomputed for the leaves).

- A `beam.Create` of up to 128 elements is one partition, so a job's work units (tiles,
  samples) all run in one task, on one worker, and stay there through a Reshuffle. Here, unless
  `--dask_npartitions` or `--dask_partition_size` is given, a Create is split into one
  partition per element, at most MAX_CREATE_PARTITIONS.

Beam's Dask runner reports no metrics (`result.metrics()` raises NotImplementedError), so
the jobs' counters are empty on it: their summaries say so instead of printing zeros.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import apache_beam as beam
from apache_beam import TaggedOutput, pvalue
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.dask import dask_runner as beam_dask
from apache_beam.runners.dask import transform_evaluator as te
from apache_beam.runners.dask.overrides import dask_overrides
from apache_beam.transforms.sideinputs import SideInputMap


def _is_tag(item: Any, *, tag: str) -> bool:
    return isinstance(item, TaggedOutput) and item.tag == tag


def _is_main(item: Any) -> bool:
    return not isinstance(item, TaggedOutput)


def _unwrap(item: Any) -> Any:
    return item.value


def _select(bag, pcoll: pvalue.PValue):
    """The elements of `pcoll` in its producer's bag: one tag of a multi-output ParDo."""
    if len(pcoll.producer.outputs) <= 1:
        return bag
    if pcoll.tag is None:
        return bag.filter(_is_main)
    return bag.filter(functools.partial(_is_tag, tag=pcoll.tag)).map(_unwrap)


def _run_bundle(items, invoker_args, invoker_kwargs, receivers):
    """Beam's `apply_dofn_to_bundle`, but tagged outputs keep their TaggedOutput wrapper.

    (Beam's unwraps every output with `.value`, which drops the tag and leaves the tagged
    elements indistinguishable from the main ones.)
    """
    from apache_beam.runners.common import DoFnInvoker

    invoker = DoFnInvoker.create_invoker(*invoker_args, **invoker_kwargs)
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for it in items:
        invoker.invoke_process(it)
    invoker.invoke_finish_bundle()
    invoker.invoke_teardown()
    out = [v if isinstance(v, TaggedOutput) else v.value for v in receivers.values]
    receivers.values.clear()
    return out


class _ParDo(te.ParDo):
    """Beam's ParDo translation with `_run_bundle`."""

    def apply(self, input_bag, side_inputs=None):
        from apache_beam.runners.common import DoFnContext, DoFnSignature, _OutputHandler
        from apache_beam.transforms.core import DoFn

        transform = self.transform
        args, kwargs = transform.raw_side_inputs
        main_input = next(iter(self.applied.main_inputs.values()))
        window_fn = main_input.windowing.windowfn if hasattr(main_input, "windowing") else None
        receivers = te.OneReceiver()
        invoker_args = [
            DoFnSignature(transform.fn),
            _OutputHandler(
                window_fn=window_fn,
                main_receivers=receivers[None],
                tagged_receivers=receivers,
                per_element_output_counter=None,
                output_batch_converter=None,
                process_yields_batches=False,
                process_batch_yields_elements=False,
            ),
        ]
        invoker_kwargs = dict(
            context=DoFnContext(transform.label, state=None),
            side_inputs=side_inputs,
            input_args=list(args),
            input_kwargs=kwargs,
            user_state_context=None,
            bundle_finalizer_param=DoFn.BundleFinalizerParam(),
        )
        return input_bag.map(te.get_windowed_value, window_fn).map_partitions(
            _run_bundle, invoker_args, invoker_kwargs, receivers
        )


# A Create's partitions when no --dask_npartitions / --dask_partition_size is given: one per
# element (our Creates list work units: tiles, samples, granules), at most this many.
MAX_CREATE_PARTITIONS = 1024


class _Create(te.Create):
    """Beam's Create translation, one partition per element by default."""

    def apply(self, input_bag, side_inputs=None):
        if self.bag_kwargs.get("npartitions") or self.bag_kwargs.get("partition_size"):
            return super().apply(input_bag, side_inputs)
        import dask.bag as db

        items = self.transform.values
        n = max(1, min(len(items), MAX_CREATE_PARTITIONS))
        return db.from_sequence(items, npartitions=n)


_TRANSLATIONS = {**te.TRANSLATIONS, beam.ParDo: _ParDo, te._Create: _Create}


class DaskRunner(beam_dask.DaskRunner):
    """Beam's DaskRunner with tagged outputs routed and every branch computed."""

    @staticmethod
    def to_dask_bag_visitor(bag_kwargs=None, client=None) -> PipelineVisitor:
        bag_kwargs = bag_kwargs or {}

        @dataclasses.dataclass
        class Visitor(PipelineVisitor):
            bags: dict = dataclasses.field(default_factory=dict)
            consumed: set = dataclasses.field(default_factory=set)
            persisted: list = dataclasses.field(default_factory=list)

            def _bag_of(self, pcoll):
                producer = pcoll.producer
                if producer not in self.bags:
                    return None
                self.consumed.add(producer)
                return _select(self.bags[producer], pcoll)

            held: list = dataclasses.field(default_factory=list)
            unheld: list = dataclasses.field(default_factory=list)

            def _side_bag(self, pcoll):
                # Computed once, on the cluster, as soon as its inputs are: every bundle that
                # reads the side input then fetches it instead of recomputing its whole
                # upstream graph (Beam's runner does the latter, per bundle). Unfused, and
                # with every bag built so far held, so that its upstream tasks are the same
                # keys the leaves use, computed once.
                bag = self._bag_of(pcoll)
                if client is None:
                    return bag
                if self.unheld:
                    self.held.extend(client.persist(self.unheld, optimize_graph=False))
                    self.unheld.clear()
                self.persisted.append(client.persist(bag, optimize_graph=False))
                return self.persisted[-1]

            def visit_transform(self, node: AppliedPTransform) -> None:
                op_class = _TRANSLATIONS.get(node.transform.__class__, te.NoOp)
                op = op_class(node, bag_kwargs=bag_kwargs)
                kws: dict[str, Any] = {"input_bag": None, "side_inputs": None}
                inputs = list(node.inputs)
                if inputs:
                    bags = []
                    for value in inputs:
                        if isinstance(value, pvalue.PBegin):
                            bags.append(None)
                        bag = self._bag_of(value)
                        if bag is not None:
                            bags.append(bag)
                    if len(bags) == 1 and not isinstance(op, te.Flatten):
                        kws["input_bag"] = bags[0]
                    else:
                        kws["input_bag"] = bags
                if node.side_inputs:
                    kws["side_inputs"] = [
                        SideInputMap(
                            type(si),
                            si._view_options(),
                            te.DaskBagWindowedIterator(
                                self._side_bag(si.pvalue), si._window_mapping_fn
                            ),
                        )
                        for si in node.side_inputs
                    ]
                self.bags[node] = op.apply(**kws)
                if self.bags[node] is not None:
                    self.unheld.append(self.bags[node])

        return Visitor()

    def run_pipeline(self, pipeline, options):
        import dask.distributed as ddist

        dask_options = options.view_as(beam_dask.DaskOptions).get_all_options(
            drop_default=True, current_only=True
        )
        bag_kwargs = beam_dask.DaskOptions._extract_bag_kwargs(dask_options)
        client = ddist.Client(**dask_options)
        pipeline.replace_all(dask_overrides())
        visitor = self.to_dask_bag_visitor(bag_kwargs, client)
        pipeline.visit(visitor)
        leaves = [bag for node, bag in visitor.bags.items() if node not in visitor.consumed]
        leaves = [bag for bag in leaves if bag is not None]
        futures = client.compute(leaves, optimize_graph=False)
        # The leaves now want what the held bags hold: the cluster keeps each until its last
        # consumer has run.
        visitor.held.clear()
        # The persisted side inputs live as long as the driver holds them: the whole run.
        return _Result(client, futures, side_inputs=visitor.persisted)


class _Result(beam_dask.DaskRunnerResult):
    """Beam's result, holding the persisted side inputs until the run ends; then it releases
    them and closes its client (Beam's leaves the client open: it keeps reconnecting to a
    cluster that has gone)."""

    def __init__(self, client, futures, *, side_inputs: list):
        super().__init__(client, futures)
        self.side_inputs = side_inputs

    def wait_until_finish(self, duration=None) -> str:
        try:
            return super().wait_until_finish(duration)
        finally:
            if self.state in ("DONE", "FAILED"):
                self.side_inputs.clear()
                self.client.close()
