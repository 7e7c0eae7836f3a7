#version 150
// Tensor pulses: each instance flies from one district to the next on an arc over the road,
// placed by the clock on the GPU so the CPU only appends a hop when it is sent.
uniform mat4 p3d_ModelViewProjectionMatrix;
uniform float u_time;
uniform float u_unit;  // typical district spacing: sets pulse size and arc height
in vec4 p3d_Vertex;
in vec4 i_from;  // xyz: start; w: clock time the hop was sent
in vec4 i_to;    // xyz: end; w: hop duration, seconds
in vec4 i_color;
out vec4 v_color;
out vec3 v_local;

void main() {
    float t = (u_time - i_from.w) / max(i_to.w, 1e-3);
    float live = step(0.0, t) * step(t, 1.0);
    vec3 along = mix(i_from.xyz, i_to.xyz, clamp(t, 0.0, 1.0));
    float span = distance(i_from.xyz, i_to.xyz);
    along.z += sin(3.14159265 * clamp(t, 0.0, 1.0)) * (0.6 * u_unit + 0.15 * span);
    float size = 0.22 * u_unit * live;
    v_color = i_color;
    v_local = p3d_Vertex.xyz;
    gl_Position = p3d_ModelViewProjectionMatrix * vec4(along + p3d_Vertex.xyz * size, 1.0);
}
