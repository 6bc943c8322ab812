"""Container parameters are checked before anything starts; bad ones name the value and the choices."""
import pytest

from pipeit_ros.container_config import ContainerSettings
from pipeit_ros.errors import PipeitError


@pytest.mark.parametrize('kwargs,match', [
    (dict(image_qos='best_effort'), "image_qos 'best_effort' is not one of sensor_data, reliable"),
    (dict(policy='newest'), "policy 'newest' is not one of drop_oldest, block"),
    (dict(queue_size=0), 'queue_size must be >= 1'),
    (dict(top_k=-1), 'top_k must be >= 0'),
    (dict(interpolation='cubic'), "interpolation 'cubic'"),
    (dict(replan_timeout_s=0.0), 'replan_timeout_s must be > 0'),
], ids=['qos', 'policy', 'queue', 'top-k', 'interpolation', 'timeout'])
def test_bad_settings_raise_with_reason(kwargs, match):
    with pytest.raises(PipeitError, match=match):
        ContainerSettings(**kwargs).check()


def test_empty_cluster_means_every_cluster():
    assert ContainerSettings(cluster='').check().cluster == '*'
    assert ContainerSettings(cluster='big').check().cluster == 'big'
