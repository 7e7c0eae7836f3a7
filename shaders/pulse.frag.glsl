#version 150
// A pulse glows hottest at its core.
in vec4 v_color;
in vec3 v_local;
out vec4 o_color;

void main() {
    float core = 1.0 - clamp(length(v_local.xy) * 1.4, 0.0, 1.0);
    o_color = vec4(v_color.rgb * (0.7 + 0.9 * core), 1.0);
}
