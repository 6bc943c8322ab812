"""Container parameters are checked before anything starts; bad ones name the value and the choices."""
import pytest

from pipeit_ros.app.container_config import ContainerSettings, runtime_refusal
from pipeit_ros.errors import PipeitError


@pytest.mark.parametrize('kwargs,match', [
    (dict(image_qos='best_effort'), "image_qos 'best_effort' is not one of sensor_data, reliable"),
    (dict(policy='newest'), "policy 'newest' is not one of drop_oldest, block"),
    (dict(queue_size=0), 'queue_size must be >= 1'),
    (dict(top_k=-1), 'top_k must be >= 0'),
    (dict(interpolation='cubic'), "interpolation 'cubic'"),
    (dict(replan_timeout_s=0.0), 'replan_timeout_s must be > 0'),
    (dict(sleep_after_s=-1.0), r'sleep_after_s must be a finite number >= 0 \(0: never sleep\), got -1.0'),
    (dict(sleep_after_s=float('nan')), r'sleep_after_s must be a finite number >= 0 \(0: never sleep\), got nan'),
], ids=['qos', 'policy', 'queue', 'top-k', 'interpolation', 'timeout', 'sleep', 'sleep-nan'])
def test_bad_settings_raise_with_reason(kwargs, match):
    with pytest.raises(PipeitError, match=match):
        ContainerSettings(**kwargs).check()


def test_empty_cluster_means_every_cluster():
    assert ContainerSettings(cluster='').check().cluster == '*'
    assert ContainerSettings(cluster='big').check().cluster == 'big'


def test_cluster_cpus_from_the_topology():
    from pipeit_ros.app.container_config import cluster_cpus
    assert cluster_cpus(ContainerSettings(cluster='c1', topology='emulated-2x1').check()) == (1,)
    assert cluster_cpus(ContainerSettings(cluster='', topology='emulated-2x1').check()) == (0, 1)
    with pytest.raises(PipeitError, match=r"cluster 'gpu' is not in topology .* \(c0, c1\)"):
        cluster_cpus(ContainerSettings(cluster='gpu', topology='emulated-2x1').check())


def test_a_running_container_takes_top_k_and_labels_file_only(tmp_path):
    """What ``ros2 param set`` on a container gets: the reason for a refusal, None where it is taken."""
    labels = tmp_path / 'labels.txt'
    labels.write_text('cat\ndog\n')
    assert runtime_refusal('top_k', 3) is None and runtime_refusal('labels_file', str(labels)) is None
    assert runtime_refusal('labels_file', '') is None                       # no labels: class indices
    assert runtime_refusal('top_k', -1) == 'top_k must be >= 0, got -1'
    assert str(tmp_path / 'missing.txt') in runtime_refusal('labels_file', str(tmp_path / 'missing.txt'))
    assert runtime_refusal('sleep_after_s', 1.0) == ('sleep_after_s is read at start only; restart the container '
                                                     'to change it')

