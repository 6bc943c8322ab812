"""List an ONNX CNN's layers, their descriptors and the legal cut points.

A layer is a Conv/Gemm/MatMul with the BatchNorm, activation and pooling nodes fused after it, or a
standalone pool, eltwise, concat or other node (see pipeit_ros.model.graph). A cut point is a place where at
most --max-cut-tensors tensors cross (1: residual and inception blocks are never cut inside); the `cut` column
shows the bytes that cross before each layer a stage may start at, and the list after the table names the
tensors. A symbolic batch dimension is fixed to 1.
"""
from pipeit_ros.cli.common import add_cut_flag, add_json_flag, add_model_argument, load_model, note, print_json


def add_arguments(parser):
    add_model_argument(parser, help='ONNX file (opset >= 11, one 4-D float image input) or zoo name')
    add_cut_flag(parser)
    add_json_flag(parser)


def run(args):

    g = load_model(args)
    if g.batch_fixed:
        note(f'{args.model}: symbolic batch dimension fixed to 1')
    if args.json:
        print_json(g.summary())
        return 0
    print(describe(g))
    return 0


def describe(g):
    """The human table: one row per layer, the crossing tensor's size where a cut is legal, totals."""
    shape = 'x'.join
    outputs = ', '.join(f'{name} {shape(map(str, s))}' for name, s in zip(g.output_names, g.output_shapes))
    lines = [f'model  {g.path}  (sha256 {g.model_hash}, opset {g.opset})',
             f'input  {g.input_name} {shape(map(str, g.input_shape))}'
             + ('  (symbolic batch fixed to 1)' if g.batch_fixed else '') + f'    output  {outputs}']
    cuts = {c.index: c for c in g.cut_points}
    name_width = min(max([len(layer.name) for layer in g.layers] + [4]), 40)
    header = f'{"#":>4} {"cut":>7}  {"name":<{name_width}}  {"type":<7} {"in CxHxW":>13} {"out CxHxW":>13} ' \
             f'{"k/s/g":>9} {"MACs":>8} {"weights":>8}  fused'
    lines += ['', header, '-' * len(header)]
    for layer in g.layers:
        cut = human_bytes(cuts[layer.index].bytes) if layer.index in cuts else ''
        ksg = f'{layer.kernel[0]}/{layer.stride[0]}/{layer.groups}' if layer.op_type in _GEOMETRY else '-'
        name = layer.name if len(layer.name) <= name_width else '...' + layer.name[-name_width + 3:]
        lines.append(f'{layer.index:>4} {cut:>7}  {name:<{name_width}}  {layer.op_type:<7} '
                     f'{shape(map(str, layer.in_shape)):>13} {shape(map(str, layer.out_shape)):>13} {ksg:>9} '
                     f'{human_count(layer.macs):>8} {human_bytes(layer.weight_bytes):>8}  '
                     + '+'.join(_SHORT.get(op, op.lower()) for op in layer.fused))
    lines += ['(cut: bytes of the tensors that cross a legal cut before that layer)', '',
              f'cut points (at most {g.max_cut_tensors or "any number of"} tensors cross):',
              f'{"#":>4} {"bytes":>7}  tensors']
    for c in g.cut_points:
        lines.append(f'{c.index:>4} {human_bytes(c.bytes):>7}  ' + ', '.join(
            f'{t} {shape(map(str, s))} ({human_bytes(b)})' for t, s, b in zip(c.tensors, c.shapes, c.sizes)))
    lines += ['', f'{len(g.layers)} layers, {len(g.cut_points)} legal cut points, {len(g.segments())} segments; '
                  f'{human_count(g.total_macs)} MACs, {human_bytes(g.total_weight_bytes)} of weights']
    return '\n'.join(lines)


_GEOMETRY = {'conv', 'dwconv', 'gconv', 'pool', 'gpool'}
_SHORT = {'BatchNormalization': 'bn', 'GlobalAveragePool': 'gap', 'GlobalMaxPool': 'gmp', 'MaxPool': 'maxpool',
          'AveragePool': 'avgpool', 'Clip': 'clip'}


def human_count(n):
    for unit, size in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if n >= size:
            return f'{n / size:.3g}{unit}'
    return str(n)


def human_bytes(n):
    for unit, size in (('GB', 2**30), ('MB', 2**20), ('KB', 2**10)):
        if n >= size:
            return f'{n / size:.3g}{unit}'
    return f'{n}B'
