#version 150
// Asphalt, white edge lines, a dashed centre line; the kerb is tinted by the link's RTT
// (green fast, red slow).
uniform vec3 u_fog_color;
in vec4 v_color;
in vec2 v_uv;
in float v_fog;
out vec4 o_color;

void main() {
    vec3 rgb = vec3(0.16, 0.165, 0.18);
    float kerb = step(v_uv.y, 0.1) + step(0.9, v_uv.y);
    rgb = mix(rgb, v_color.rgb * 0.8, kerb);
    float edge = (step(0.12, v_uv.y) * step(v_uv.y, 0.16)) + (step(0.84, v_uv.y) * step(v_uv.y, 0.88));
    rgb = mix(rgb, vec3(0.8), edge);
    float dash = step(abs(v_uv.y - 0.5), 0.025) * step(0.5, fract(v_uv.x * 0.5));
    rgb = mix(rgb, vec3(0.95, 0.85, 0.4), dash);
    o_color = vec4(mix(rgb, u_fog_color, v_fog), 1.0);
}
